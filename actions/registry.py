"""The action registry: everything irbot needs to know about an action, declared once beside it.

A declaration says what the action is (name, summary, risk), what it may call in AWS, what it
acts on and which options it takes (the /ir grammar and help are generated from these), what it
needs from earlier work, what it makes of its target on the incident card, and how a worker runs
it (queue, timeout, one job or one per target). The workers read these; they never switch on an
action's name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from actions.aws import Declaration


class Risk(enum.Enum):
    # READ runs at once for a responder; CHANGE (state in AWS, or code on a host) needs a second person.
    READ = "read"
    CHANGE = "change"


class Need(enum.Enum):
    """What an action needs from earlier work, handed to it in its RunContext."""

    RECORD = "record"  # the stored record of the target's state before an earlier change (context.record)
    EVENTS = "events"  # a CloudTrail event source (context.events)


class Recovery(enum.Enum):
    """What irbot does with a request whose worker died in the middle of it."""

    RESUME = "resume"  # run it again: every step looks before it acts, so the second run finishes the first
    FAIL = "fail"  # end it failed, listing the steps that were done


class Reply(enum.Enum):
    """How the outcome reaches the channel."""

    STEPS = "steps"  # one message listing the named steps, redrawn as they finish
    EVIDENCE = "evidence"  # the stored objects with their digests and links, and a manifest
    # A readiness card (score, failing checks with what to do, passing ones counted) from the result's
    # facts["readiness"]; the worker also keeps it as the latest readiness (core.readiness) for the Home tab.
    READINESS = "readiness"
    ANALYSIS = "analysis"  # what was found on disk images: the worst findings on the card, every one in the evidence


# What an action acts on: the word the usage shows, and an example for sentences.
TARGETS = {
    "instance": ("instance-id", "i-0123456789abcdef0"),
    "access-key": ("access-key-id", "AKIAIOSFODNN7EXAMPLE"),
    "memory-target": ("target", "i-0123456789abcdef0"),
    "disk": ("instance-id|snapshot-id", "snap-0123456789abcdef0"),  # a snapshot, or an instance's snapshots
}


@dataclass(frozen=True)
class Option:
    name: str  # as typed, e.g. "--region"
    takes: str | None = None  # the value's placeholder, None for a flag
    kind: str = "flag"  # how the grammar checks the value: flag, region, date, kms-key, text, severity
    rest: bool = False  # the value is the rest of the line (free text)
    # What it does, in words, for every headline and approval dialog ("{value}" is its value): a destructive
    # option must be read before anyone approves, not found in step 5 of 5.
    says: str = ""
    # The key a value of `all` is stored under instead (--account all: "accounts"), so the option's own key keeps
    # naming one place, where the request starts and its records are kept.
    every: str = ""

    @property
    def key(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Grant:
    """A permission AWS checks for irbot while a service acts on its behalf — passing a role to EC2, EC2
    using a KMS key — so no call of irbot's shows it, and only the policy can say it, with its condition."""

    sid: str  # the policy statement's name
    actions: tuple[str, ...]
    condition: dict
    why: str


REGION = Option("--region", "R", "region")
ACCOUNT = Option("--account", "ACCOUNT", "account")
DRY_RUN = Option("--dry-run", says="as a DRY RUN: nothing will change")
# For an action that can look everywhere at once (its spec's ``everywhere``): `all` as well as one account or region.
REGION_OR_ALL = Option("--region", "R|all", "region", every="regions")
ACCOUNT_OR_ALL = Option("--account", "ACCOUNT|all", "account", every="accounts")


@dataclass(frozen=True)
class ActionSpec:
    name: str
    risk: Risk
    summary: str
    permissions: tuple[str, ...]
    run: Callable
    target: str | None = "instance"  # None: no target, the account (or accounts) itself
    many: bool = False  # more than one target in one request
    extra_options: tuple[Option, ...] = ()
    needs: frozenset[Need] = frozenset()
    # What a finished run makes of its target on the incident card, given the request's options.
    card_state: Callable[[dict], str] | None = None
    reply: Reply = Reply.STEPS
    queue: str = "actions"  # or "long", for work that takes hours (a worker listens on both)
    timeout_seconds: int = 15 * 60
    fan_out: bool = False  # one job per target, then one job that ends the request
    parallel_targets: int = 1  # without fan_out: how many of a request's targets its one job runs at once
    # Which of irbot's managed policies grants its calls (bot.policies.POLICY_PARTS): IAM caps each at 6,144 characters.
    policy: str = "core"
    target_title: str = "Run on {target}"  # a fan-out target's line on the request's card
    batch_word: str = "targets"  # what a fan-out batch's targets are called in its summary
    loses_memory: bool = False  # waits for a memory capture of its target to end before it runs
    recovery: Recovery = Recovery.RESUME
    grants: tuple[Grant, ...] = ()
    # Where it acts, as messages say it: "region" (the request's), "regions" (every enabled region at once), "global"
    # (IAM, which has no region). A memory target given as user@host is a host, whatever this says.
    scope: str = "region"
    everywhere: bool = False  # takes `--region all` and `--account all` (every enabled region, every account irbot may act in)

    @property
    def options(self) -> tuple[Option, ...]:
        """Every AWS action takes --region and --account; one that changes things can be tried with --dry-run."""
        places = (REGION_OR_ALL, ACCOUNT_OR_ALL) if self.everywhere else (REGION, ACCOUNT)
        return (*places, *((DRY_RUN,) if self.risk is Risk.CHANGE else ()), *self.extra_options)

    @property
    def declaration(self) -> Declaration:
        return Declaration(f"action {self.name}", frozenset(self.permissions))

    def state_for(self, options: dict) -> str | None:
        return self.card_state(options) if self.card_state else None


REGISTRY: dict[str, ActionSpec] = {}


def action(name: str, *, risk: Risk, summary: str, permissions: tuple[str, ...], **declared):
    """Register the decorated function as the action called ``name``; ``declared`` fills the rest of its spec.

    Every action has one signature: ``run(session, target, region, *, context, dry_run=False, on_step=None, **options)``.
    """

    def register(func: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"action {name!r} is registered twice")
        if declared.get("target", "instance") not in (*TARGETS, None):  # None: it acts on the account itself
            raise ValueError(f"action {name!r} has an unknown target kind")
        card = declared.pop("card_state", None)
        if isinstance(card, str):
            declared["card_state"] = lambda options, text=card: text
        elif card is not None:
            declared["card_state"] = card
        if "needs" in declared:
            declared["needs"] = frozenset(declared["needs"])
        REGISTRY[name] = ActionSpec(name, risk, summary, tuple(sorted(set(permissions))), func, **declared)
        return func

    return register


def get(name: str) -> ActionSpec | None:
    return REGISTRY.get(name)


def permissions(names: list[str] | None = None) -> list[str]:
    """The IAM actions the named actions (default: all) need, sorted and unique."""
    specs = REGISTRY.values() if names is None else [REGISTRY[n] for n in names]
    return sorted({p for spec in specs for p in spec.permissions})
