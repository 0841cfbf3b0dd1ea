"""What an action needs to know about the request it serves, beyond its target."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from actions.artefacts import Artefact


@dataclass(frozen=True)
class RunContext:
    incident: str = ""
    requester: str = ""
    approvers: tuple[str, ...] = ()
    request_id: str = ""
    # Keeps evidence the moment it exists (before anything changes); returns where it went.
    keep: Callable[[Artefact], str] | None = None
    analyst_cidr: str | None = None  # the one address range isolation still lets SSH in from
    capture_source_groups: tuple[str, ...] = ()  # the workers' or bastion's groups, let in on SSH to capture memory
    account: str = ""  # the AWS account the action works in
    session_in: Callable[[str], object] | None = None  # a session in another account irbot may act in (hunts across accounts)
    allowed_accounts: Callable[[], tuple[str, ...]] | None = None
    concurrency: int = 32  # at most this many AWS calls at once, in work that fans out across accounts and regions
    image_concurrency: int = 48  # snapshot blocks fetched at once per image (/ir image)
    workstation: str | None = None  # the forensic workstation's instance ID or ARN (/ir workstation)
    # irbot's own deployment, for the readiness checks of irbot itself (/ir prep)
    own_account: str = ""  # the account irbot runs in: its evidence bucket and findings queue are there
    home_region: str = ""  # irbot's AWS_REGION, where its bucket and queue are
    evidence_bucket: str | None = None
    evidence_lock: Callable[[], dict] | None = None  # the evidence bucket's ObjectLockConfiguration ({} without Object Lock)
    findings_queue: str | None = None  # IR_FINDINGS_QUEUE_URL
    known_hosts: str | None = None  # IR_SSH_KNOWN_HOSTS

    @property
    def capture_path(self) -> tuple[str, ...]:
        """Where isolation still admits SSH from: the analyst's range and the capture's security groups."""
        return tuple(source for source in (self.analyst_cidr, *self.capture_source_groups) if source)
    untrack_pause_seconds: float = 2.0  # time for flows to turn untracked before the empty group
    memory: object | None = None  # MemorySettings, when SSH capture is set up
    open_sink: Callable[..., object] | None = None  # opens a streamed evidence object by name (min_part_size=: for a large one)
    on_progress: Callable[[object], None] | None = None
    record: dict | None = None  # the target's stored state record, for actions that need it (Need.RECORD)
    events: object | None = None  # a CloudTrail EventSource, for actions that need one (Need.EVENTS)
    audit: Callable[..., None] | None = None  # audit(action, **params): one record in the incident's audit trail, now
    images_of: Callable[[str], list[dict]] | None = None  # the custody records of the disk images made of a snapshot or instance
    evidence_file: Callable[[str, str | None], object] | None = None  # a read-only file over one evidence object version
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def store(self, artefact: Artefact) -> str:
        return self.keep(artefact) if self.keep else "not kept (no evidence store)"
