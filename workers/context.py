"""What a job works with: the process's runtime (settings, Redis, Slack, audit, approvals), read once
per process, and one request's view of it (its AWS session, evidence prefix, audit records, seal)."""

from __future__ import annotations

import copy
import json
import socket
from datetime import datetime, timezone

import boto3
from botocore.config import Config
import structlog
from redis import Redis
from rq import get_current_job

import actions
from actions import aws
from actions.aws import Declaration
from actions.errors import ActionError
from actions.context import RunContext
from actions.memory import MemorySettings
from actions.registry import ActionSpec
from chat.directory import approver_group, responder_group
from chat.messages import short
from chat.outbox import Outbox
from chat.slack import Slack
from core import settings as settings_module
from core.approvals import ApprovalBook, book_from_settings
from actions.accounts import Accounts
from core.accounts import accounts_for
from core.audit import AUDIT_SEAL, trail_for
from core.evidence import EVIDENCE, EvidenceStore, StoredObject
from core.logs import get_logger
from core.queues import connect, schedule_outbox_delivery
from core.request import CommandRequest
from core.settings import Settings

log = get_logger(__name__)


class Runtime:
    """The parts every job of this process shares."""

    def __init__(self, settings: Settings, connection: Redis):
        self.settings = settings
        self.connection = connection
        self.slack = Slack.from_settings(settings, Outbox(connection), lambda: schedule_outbox_delivery(connection))
        self.audit = trail_for(settings, connection)
        self.book: ApprovalBook = book_from_settings(settings, connection, approver_group(settings, self.slack.client), self.audit,
                                                     responder_group(settings, self.slack.client))
        self.worker = f"worker:{socket.gethostname()}"


_RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    """This process's runtime, made at its first job; the job's own Redis connection when RQ runs it."""
    global _RUNTIME
    settings = settings_module.current("worker")
    job = get_current_job()
    connection = job.connection if job else None
    if _RUNTIME is None or _RUNTIME.settings is not settings or (connection is not None and _RUNTIME.connection is not connection):
        _RUNTIME = Runtime(settings, connection or connect(settings.redis_url, blocking=True))
    return _RUNTIME


def memory_settings(settings: Settings) -> MemorySettings | None:
    if not settings.ssh_key:
        return None
    return MemorySettings(
        key_path=settings.ssh_key, command=settings.memory_command, size_command=settings.memory_size_command,
        known_hosts=settings.ssh_known_hosts, user=settings.ssh_user, bastion=settings.ssh_bastion,
        stall_seconds=settings.memory_stall_seconds,
    )


class JobContext:
    """One request's work in one job."""

    def __init__(self, request: CommandRequest, rt: Runtime | None = None):
        rt = rt or runtime()
        self.request = request
        self.runtime = rt
        self.settings, self.connection, self.slack, self.audit, self.book, self.worker = (
            rt.settings, rt.connection, rt.slack, rt.audit, rt.book, rt.worker)
        job = get_current_job()
        self.job_id = job.id if job else None
        self._session: boto3.Session | None = None
        self._account: str | None = None
        self._store: EvidenceStore | None = None
        self._prefix: str | None = None  # where this job's evidence goes, fixed at the first object
        self.kept: list[StoredObject] = []

    @property
    def spec(self) -> ActionSpec | None:
        return actions.get(self.request.command)

    @property
    def accounts(self) -> Accounts:
        return accounts_for(self.settings)

    @property
    def account(self) -> str:
        """The AWS account the request acts in: the one the bot chose (--account, the key's owner, IR_DEFAULT_ACCOUNT);
        else, asked here with the worker's patience, the owner of an access key, or irbot's own."""
        if self._account is None:
            chosen = self.request.options.get("account")
            spec, targets = self.spec, self.request.targets
            if not chosen and spec is not None and spec.target == "access-key" and targets and targets[0].startswith("AKIA"):
                chosen = self.accounts.owner_of_key(targets[0])
            self._account = chosen or self.accounts.default()
        return self._account

    def check_account(self) -> None:
        """Fail closed: an account irbot may not act in is refused before any call there."""
        refused = self.accounts.refusal(self.account)
        if refused:
            raise ActionError(refused)

    def session_in(self, account: str) -> boto3.Session:
        """A session in ``account`` for this request and the person who asked, under the action's declared permissions.
        Every way into an account passes here, so an account irbot may not act in is refused here too (fail closed)."""
        refused = self.accounts.refusal(account)
        if refused:
            raise ActionError(refused)
        session = self.accounts.session(account, request_id=self.request.id, person=self.request.user_id)
        if self.spec is not None:
            aws.declare(session, self.spec.declaration)
        return session

    @property
    def session(self) -> boto3.Session:
        """The AWS session the request's action runs with, in its account, under the action's declared permissions."""
        if self._session is None:
            self._session = self.session_in(self.account)
        return self._session

    @property
    def region(self) -> str:
        return self.request.region or self.settings.aws_region

    def evidence_store(self, declaration: Declaration = EVIDENCE) -> EvidenceStore:
        s = self.settings
        # SigV4 links: S3 refuses SigV2 in regions opened since 2014 and for buckets made after June 2020.
        # The evidence bucket is irbot's own, whatever account the action works in.
        s3 = aws.client(boto3.Session(), "s3", s.aws_region, declared=declaration, config=Config(signature_version="s3v4"))
        return EvidenceStore(s3, s.evidence_bucket,
                             lock_mode=s.evidence_lock_mode, retention_days=s.evidence_retention_days, link_expiry_seconds=s.link_expiry_seconds)

    @property
    def store(self) -> EvidenceStore:
        if self._store is None:
            self._store = self.evidence_store()
        return self._store

    def for_target(self, target: str) -> "JobContext":
        """The same job's context for one target of a batch: its own evidence prefix."""
        other = copy.copy(self)
        other.request = CommandRequest.from_dict(self.request.to_dict() | {"targets": [target]})
        other._prefix, other.kept = None, []
        return other

    def target_prefix(self, target: str) -> str:
        """Where a target's evidence goes in the bucket: incident, account, target, then one folder per request."""
        return f"{self.request.incident or self.request.channel_id}/{self.account}/{target}/"

    def evidence_prefix(self) -> str:
        if self._prefix is None:
            target = self.request.targets[0] if self.request.targets else self.request.command  # an action on the account itself
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            self._prefix = f"{self.target_prefix(target)}{stamp}-{self.request.id}/"
        return self._prefix

    def run_context(self, approvers=(), **parts) -> RunContext:
        r, s = self.request, self.settings
        has_store = bool(s.evidence_bucket)
        return RunContext(
            incident=r.incident or r.channel_id, requester=r.user_id, approvers=tuple(approvers), request_id=r.id,
            keep=self.keep if has_store else None, analyst_cidr=s.analyst_cidr, capture_source_groups=s.capture_source_groups,
            account=self.account, session_in=self.session_in, allowed_accounts=lambda: tuple(sorted(self.accounts.allowed())),
            concurrency=s.hunt_concurrency, image_concurrency=s.image_concurrency, workstation=s.workstation,
            untrack_pause_seconds=s.untrack_pause_seconds, memory=memory_settings(s),
            own_account=self.accounts.own, home_region=s.aws_region, evidence_bucket=s.evidence_bucket, findings_queue=s.findings_queue_url,
            evidence_lock=(lambda: self.store.lock_configuration()) if has_store else None, known_hosts=s.ssh_known_hosts,
            open_sink=self.open_sink if has_store else None, audit=lambda action, **params: self.record(action, "done", **params),
            images_of=self.images_of if has_store else None, evidence_file=self.evidence_file if has_store else None, **parts,
        )

    def open_sink(self, name: str, *, min_part_size: int = 0):
        # S3 takes at most 10,000 parts: a large image asks for larger parts than the setting's.
        part_size = max(self.settings.memory_part_mib << 20, -(-min_part_size // (1 << 20)) << 20)
        return self.store.open_stream(self.evidence_prefix() + name, name=name, part_size=part_size)

    def images_of(self, target: str) -> list[dict]:
        """The custody of the newest image of each snapshot ``target`` names (itself, or an instance's), in this request's
        account and region, as /ir image recorded it in this incident's audit trail: the chain says which object is the
        image, so a key someone put in the bucket can't pass for one."""
        newest: dict[str, dict] = {}
        for record in self.audit.for_incident(self.request.incident or self.request.channel_id):
            params = record.get("params", {})
            if (record.get("action") == "image.custody" and target in (params.get("snapshot"), params.get("instance"))
                    and params.get("account") == self.account and params.get("region") == self.region and params.get("s3")):
                newest[params["snapshot"]] = params
        return list(newest.values())

    def evidence_file(self, key: str, version_id: str | None):
        from actions.s3_file import S3File

        return S3File(self.store.s3, self.store.bucket, key, version_id=version_id)

    def keep(self, artefact) -> str:
        """Store one piece of evidence now, note it in the audit trail; returns its s3:// URI."""
        obj = self.store.put(self.evidence_prefix() + artefact.name, artefact.body, name=artefact.name,
                             content_type=artefact.content_type, description=artefact.description)
        self.kept.append(obj)
        copy_key = {}
        if artefact.state_record:
            # What a later action decides and restores from: the target's newest state record. Redis holds it
            # for speed; a copy under a per-target prefix of the bucket outlives Redis (see load_state_record).
            target = self.request.targets[0]
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            copy = self.store.put(f"{state_record_prefix(self.account, self.region, target)}{stamp}-{self.request.id}.json", artefact.body,
                                  name=artefact.name, content_type=artefact.content_type, description=artefact.description)
            copy_key = {"state_copy": copy.key}
            self.connection.set(state_record_key(self.account, self.region, target), artefact.body)
        self.record("evidence.stored", "done", key=obj.key, sha256=obj.sha256, size=obj.size, version_id=obj.version_id, **copy_key)
        return obj.uri

    def load_state_record(self, target: str) -> dict | None:
        """The target's newest state record: from Redis, or from the bucket if Redis lost it. Never from the
        target itself (its tags are the suspect's to write)."""
        key = state_record_key(self.account, self.region, target)
        raw = self.connection.get(key)
        if raw is not None:
            return json.loads(raw)
        if self.settings.evidence_bucket:
            raw = self.store.newest(state_record_prefix(self.account, self.region, target))
        if raw is None and self.account == self.accounts.own:
            # Recorded before records named their account (irbot's own, then): the old key, then the old copy.
            raw = self.connection.get(f"irbot:isolation:{self.region}:{target}")
            if raw is None and self.settings.evidence_bucket:
                raw = self.store.newest(f"state/{self.region}/{target}/")
        if raw is not None:
            self.connection.set(key, raw)
        return json.loads(raw) if raw else None

    def record(self, action: str, outcome: str, **params) -> None:
        r = self.request
        marks = {"break_glass": r.break_glass} if r.break_glass else {}
        self.audit.append(incident=r.incident or r.channel_id, actor=self.worker, action=action, target=" ".join(r.targets),
                          params={"request": r.id, "command": r.command, **self._place(), **marks, **params}, outcome=outcome)

    def _place(self) -> dict:
        """Account and region for a record; a record written because the account lookup failed has none."""
        try:
            return {"account": self.account, "region": self.region}
        except Exception:  # noqa: BLE001 - the failure itself is what is being recorded
            return {"region": self.region}

    def seal(self) -> str:
        """Seal the audit records so far; returns a line for the channel ('' if nothing was sealed)."""
        if not self.settings.evidence_bucket:
            return ""
        try:
            seal = self.audit.seal(self.evidence_store(AUDIT_SEAL), incident=self.request.incident or self.request.channel_id, actor=self.worker)
        except Exception as exc:  # a seal that fails must not hide the action's own outcome
            log.error("audit seal failed", error=str(exc))
            return "Audit trail not sealed this time (see the worker log); it will be sealed with the next batch."
        if seal is None:
            return ""
        # For the request's thread: the head short, like every digest in a message (the sealed batch's name carries it too).
        return f"Audit records {seal.first}-{seal.last} sealed to s3://{self.settings.evidence_bucket}/{seal.key}; chain head sha256 {short(seal.head)}"


def state_record_key(account: str, region: str, target: str) -> str:
    return f"irbot:isolation:{account}:{region}:{target}"


def state_record_prefix(account: str, region: str, target: str) -> str:
    return f"state/{account}/{region}/{target}/"


def bind_logs(request: CommandRequest) -> None:
    job = get_current_job()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request.id, job_id=job.id if job else None, command=request.command)
