"""A readiness check, declared like an action: its name, what it looks at, the IAM calls it makes, how to fix a
failure, and where it runs. /ir prep runs every registered check; its permissions are theirs, so the generated
IAM policy and the permission contract of the tests cover a new check without touching anything else.

A check is a function of a Probe (one account, one region) returning a Verdict, or None where it doesn't apply
(no trail at all: the trail check says so, the validation check has nothing to judge). A check AWS refused or
that failed is "couldn't check" with the reason, never a pass: the runner turns its ActionError into that.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

import boto3

from actions.aws import client
from actions.context import RunContext

WORST_SHOWN = 5  # offenders a verdict names; the rest are counted


class Scope(enum.Enum):
    REGION = "region"  # once in every selected account and region (GuardDuty, flow logs)
    ACCOUNT = "account"  # once per selected account: global services (IAM, S3) or account-wide settings
    DEPLOYMENT = "deployment"  # once per run, in irbot's own account: irbot itself


class Status(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "couldn't check"


@dataclass(frozen=True)
class Check:
    name: str  # stable, for the evidence and the Home tab: "trail-validation"
    title: str  # what a pass means, for people: "CloudTrail log-file validation on"
    area: str  # CloudTrail, Detection, Network, S3, IAM, EC2, Billing, irbot
    permissions: tuple[str, ...]
    fix: str  # one sentence: what to do about a failure
    scope: Scope
    run: Callable[["Probe"], "Verdict | None"]


@dataclass
class Verdict:
    status: Status
    found: str  # what the check saw, short (raw: the card escapes it)
    offenders: list[str] = field(default_factory=list)  # the worst few, at most WORST_SHOWN
    more: int = 0  # offenders not named
    check: str = ""
    account: str = ""
    region: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"status": self.status.value}


@dataclass(frozen=True)
class Probe:
    """What a check looks through: one account's session, one region, the request's context, and the time it runs."""

    session: boto3.Session
    account: str
    region: str
    context: RunContext
    now: datetime

    def client(self, service: str, region: str | None = None, config=None):
        return client(self.session, service, region or self.region, config=config)


def passed(found: str) -> Verdict:
    return Verdict(Status.PASSED, found)


def failed(found: str, offenders=()) -> Verdict:
    """A failure naming its worst offenders (given worst first) and counting the rest."""
    return _naming(Status.FAILED, found, list(offenders))


def unknown(found: str, offenders=()) -> Verdict:
    """Couldn't check: why, and what couldn't be read."""
    return _naming(Status.UNKNOWN, found, list(offenders))


def _naming(status: Status, found: str, offenders: list[str]) -> Verdict:
    return Verdict(status, found, offenders[:WORST_SHOWN], max(0, len(offenders) - WORST_SHOWN))


CHECKS: dict[str, Check] = {}


def check(name: str, title: str, *, area: str, permissions: tuple[str, ...], fix: str, scope: Scope):
    """Register the decorated function as the readiness check ``name``."""

    def register(func: Callable[[Probe], Verdict | None]) -> Callable:
        if name in CHECKS:
            raise ValueError(f"readiness check {name!r} is registered twice")
        CHECKS[name] = Check(name, title, area, tuple(sorted(set(permissions))), fix, scope, func)
        return func

    return register


def permissions() -> tuple[str, ...]:
    """Every IAM action the registered checks call."""
    return tuple(sorted({p for c in CHECKS.values() for p in c.permissions}))
