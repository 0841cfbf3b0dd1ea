"""A responder's request as it travels from the bot to a worker."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import actions
from actions import targets as target_rules


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
    """Where an action works, as every message, card and report shows it: "222222222222, eu-west-1" (raw: escape it where shown).
    IAM has no region: "222222222222, IAM (global)"."""
    region = "IAM (global)" if region == "global" else region
    return ", ".join(part for part in (account, region or "the default region") if part)


def scope(command: str, targets, account: str | None, region: str | None, *, regions: int | None = None, accounts: str | None = None,
          every_region: bool = False) -> str:
    """Where a command acts, said truthfully and with its preposition (raw: escape it where shown): "in 222222222222,
    eu-west-1"; hunt-key "in all 17 enabled regions of 222222222222"; revoke-key "in 222222222222, IAM (global)";
    memory on user@host "on host 10.0.1.5". ``regions``: how many a search of every region covered, once known;
    ``every_region``: the request asked for every region (`--region all`)."""
    spec = actions.get(command)
    kind = spec.scope if spec else "region"
    if kind == "regions" or every_region:
        every = f"all {regions} enabled regions" if regions else "every enabled region"
        of = ("every account irbot may act in" if accounts == "all" else f"accounts {accounts}") if accounts else account
        return f"in {every}" + (f" of {of}" if of else "")
    if kind == "global":
        return f"in {place(account, 'global')}"
    if accounts:
        return f"in {region or 'the default region'} of " + ("every account irbot may act in" if accounts == "all" else f"accounts {accounts}")
    hosts = [_host(t) for t in targets if spec and spec.target == "memory-target" and not target_rules.instance_id(t)]
    parts = [] if hosts and len(hosts) == len(targets) else [f"in {place(account, region)}"]
    if hosts:
        parts.append(f"on {'host' if len(hosts) == 1 else 'hosts'} {', '.join(hosts)}")
    return " and ".join(parts)


def asked_scope(command: str, targets, options: dict, region: str | None, *, regions: int | None = None) -> str:
    """scope() of a request as its options ask it: its account, or the accounts and every region it names."""
    return scope(command, targets, options.get("account"), region, regions=regions, accounts=options.get("accounts"),
                 every_region=options.get("regions") == "all")


def _host(target: str) -> str:
    """user@host:port → host ([::1]:22 → ::1)."""
    host = target.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.split(":", 1)[0]


def recorded_place(params: dict) -> tuple[str | None, str | None]:
    """An audit record's account and region: the worker's records name both, the bot's carry the request's options."""
    options = params.get("options") or {}
    return params.get("account") or options.get("account"), params.get("region") or options.get("region")


class Places:
    """Where each request of an incident acted, gathered from its records (a later record may know the account)."""

    def __init__(self):
        self._found: dict[str, tuple[str | None, str | None]] = {}
        self._commands: dict[str, str] = {}

    def note(self, request: str | None, params: dict) -> None:
        if request:
            if params.get("command"):
                self._commands[request] = params["command"]
            account, region = recorded_place(params)
            known = self._found.get(request, (None, None))
            self._found[request] = (known[0] or account, known[1] or region)

    def of(self, request: str | None) -> str:
        account, region = self._found.get(request or "", (None, None))
        return place(account, region) if account or region else ""

    def named(self, target: str, request: str | None) -> str:
        """``i-0abc (222222222222, eu-west-1)``: a target as the card and the report name it."""
        where = self.of(request)
        spec = actions.get(self._commands.get(request or "", ""))
        if spec is not None and spec.scope != "region":
            # A search of every region, or IAM: the account, and the truth about the region.
            account = self._found.get(request or "", (None, None))[0]
            where = ", ".join(part for part in (account, "every enabled region" if spec.scope == "regions" else "IAM") if part)
        # user@host is reached over SSH, not in an AWS account or region
        return f"{target} ({where})" if target and where and "@" not in target else target

