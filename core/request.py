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
