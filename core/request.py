"""A responder's request as it travels from the bot to a worker."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


@dataclass(frozen=True)
class CommandRequest:
    command: str  # e.g. "collect"
    targets: tuple[str, ...]
    options: dict[str, Any]
    user_id: str
    channel_id: str
    team_id: str = ""
    user_name: str = ""
    channel_name: str = ""
    response_url: str = ""
    # The incident the work belongs to; until incidents exist, the channel is the incident.
    incident: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Asked from the command line while Slack was down: the OS user, the host and the reason.
    break_glass: dict = field(default_factory=dict)
    received_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def region(self) -> str | None:
        return self.options.get("region")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = list(self.targets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CommandRequest":
        return cls(**{**data, "targets": tuple(data.get("targets", ()))})


def place(account: str | None, region: str | None) -> str:
    """Where an action works, as every message, card and report shows it: "222222222222, eu-west-1" (raw: escape it where shown)."""
    return ", ".join(part for part in (account, region or "the default region") if part)


def recorded_place(params: dict) -> tuple[str | None, str | None]:
    """An audit record's account and region: the worker's records name both, the bot's carry the request's options."""
    options = params.get("options") or {}
    return params.get("account") or options.get("account"), params.get("region") or options.get("region")


class Places:
    """Where each request of an incident acted, gathered from its records (a later record may know the account)."""

    def __init__(self):
        self._found: dict[str, tuple[str | None, str | None]] = {}

    def note(self, request: str | None, params: dict) -> None:
        if request:
            account, region = recorded_place(params)
            known = self._found.get(request, (None, None))
            self._found[request] = (known[0] or account, known[1] or region)

    def of(self, request: str | None) -> str:
        account, region = self._found.get(request or "", (None, None))
        return place(account, region) if account or region else ""

    def named(self, target: str, request: str | None) -> str:
        """``i-0abc (222222222222, eu-west-1)``: a target as the card and the report name it."""
        where = self.of(request)
        # user@host is reached over SSH, not in an AWS account or region
        return f"{target} ({where})" if target and where and "@" not in target else target

