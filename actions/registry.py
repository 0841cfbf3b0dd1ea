"""The action registry: what each action is, how risky it is, what it may call in AWS."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable


class Risk(enum.Enum):
    # READ runs at once for a responder; CHANGE (state in AWS, or code on a host) needs a second person.
    READ = "read"
    CHANGE = "change"


@dataclass(frozen=True)
class ActionSpec:
    name: str
    risk: Risk
    summary: str
    permissions: tuple[str, ...]
    run: Callable


REGISTRY: dict[str, ActionSpec] = {}


def action(name: str, *, risk: Risk, summary: str, permissions: tuple[str, ...]):
    """Register the decorated function as the action called ``name``."""

    def register(func: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"action {name!r} is registered twice")
        REGISTRY[name] = ActionSpec(name, risk, summary, tuple(sorted(set(permissions))), func)
        return func

    return register


def get(name: str) -> ActionSpec | None:
    return REGISTRY.get(name)


def permissions(names: list[str] | None = None) -> list[str]:
    """The IAM actions the named actions (default: all) need, sorted and unique."""
    specs = REGISTRY.values() if names is None else [REGISTRY[n] for n in names]
    return sorted({p for spec in specs for p in spec.permissions})
