"""What actions hand back: results and the evidence artefacts they produced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Artefact:
    """One piece of evidence, exactly as it will be stored."""

    name: str
    body: bytes
    content_type: str
    description: str
    # The target's state before a change, which a later action (release) restores from.
    state_record: bool = False


@dataclass
class Result:
    action: str
    target: str
    region: str
    artefacts: list[Artefact] = field(default_factory=list)
    # Things the responder must know, e.g. a part that could not be read.
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # For actions that change things: each named step and how it went.
    steps: list = field(default_factory=list)
    # Resources worth a card of their own in the channel, each with the buttons that act on it.
    findings: list[dict] = field(default_factory=list)


def to_json_bytes(data: Any) -> bytes:
    """Stable JSON (sorted keys, ISO dates) so the same state gives the same digest."""
    return json.dumps(data, indent=2, sort_keys=True, default=_plain, ensure_ascii=False).encode("utf-8") + b"\n"


def json_artefact(name: str, description: str, data: Any, *, state_record: bool = False) -> Artefact:
    return Artefact(name, to_json_bytes(data), "application/json", description, state_record)


def _plain(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
