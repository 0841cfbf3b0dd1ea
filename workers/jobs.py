"""Job wrappers: what an RQ worker runs for each /ir command.

Read-only commands run straight away (run_command). Gated commands go through
the approval book: prepare_request posts the dry-run plan with the buttons,
execute_request runs the approved action once, expire_request ends what nobody
approved in time.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Callable

import boto3
import structlog
from redis import Redis
from rq import Queue, get_current_job
from slack_sdk import WebClient

import actions
from actions import aws
from actions.artefacts import Artefact, Result, to_json_bytes
from actions.collect import collect as collect_action
from actions.errors import ActionError
from actions.registry import Risk
from actions.cloudtrail import CloudTrailEvents, EventSource
from actions.context import RunContext
from actions.steps import Outcome
from workers import memory, messages
from workers.approvals import ApprovalBook, book_from_settings
from workers.audit import AuditTrail
from workers.evidence import EvidenceStore, StoredObject
from workers.logs import get_logger
from workers.queues import SERIALIZER, connect, queue
from workers.report import post, slack_client, update
from workers.request import CommandRequest
from workers.settings import Settings, load

log = get_logger(__name__)

Outcome_ = tuple[str, list[dict], dict]  # channel text, blocks, job result


class Context:
    """What one job needs, built from the worker's environment."""

    def __init__(self, request: CommandRequest | None):
        self.request = request
        job = get_current_job()
        self.job_id = job.id if job else None
        self.settings: Settings = load(os.environ, "worker")
        self.connection: Redis = job.connection if job else connect(self.settings.redis_url, blocking=True)
        self.slack: WebClient = slack_client(self.settings)
        self.audit = AuditTrail(self.connection)
        self.book: ApprovalBook = book_from_settings(self.settings, self.connection, self.slack)
        self.worker = f"worker:{socket.gethostname()}"
        self._session: boto3.Session | None = None
        self._store: EvidenceStore | None = None
        self._prefix: str | None = None  # where this job's evidence goes, fixed at the first object
        self.kept: list[StoredObject] = []

    @property
    def session(self) -> boto3.Session:
        if self._session is None:
            self._session = boto3.Session()
        return self._session

    @property
    def region(self) -> str:
        return self.request.region or self.settings.aws_region

    @property
    def store(self) -> EvidenceStore:
        if self._store is None:
            self._store = EvidenceStore(
                aws.client(self.session, "s3", self.settings.aws_region),
                self.settings.evidence_bucket,
                lock_mode=self.settings.evidence_lock_mode,
                retention_days=self.settings.evidence_retention_days,
                link_expiry_seconds=self.settings.link_expiry_seconds,
            )
        return self._store

    def for_request(self, request: CommandRequest) -> "Context":
        """The same job's context for one target of a batch: its own evidence prefix."""
        other = copy.copy(self)
        other.request, other._prefix, other.kept = request, None, []
        return other

    def evidence_prefix(self) -> str:
        if self._prefix is None:
            self._prefix = evidence_prefix(self.request, self.request.targets[0] if self.request.targets else "-")
        return self._prefix

    def run_context(self, approvers=()) -> RunContext:
        r = self.request
        has_store = bool(self.settings.evidence_bucket)
        return RunContext(
            incident=r.incident or r.channel_id, requester=r.user_id, approvers=tuple(approvers), request_id=r.id,
            keep=self.keep if has_store else None, analyst_cidr=self.settings.analyst_cidr,
            untrack_pause_seconds=self.settings.untrack_pause_seconds,
            memory=memory.memory_settings(self.settings),
            open_sink=(lambda name: self.store.open_stream(self.evidence_prefix() + name, name=name,
                                                           part_size=self.settings.memory_part_mib << 20)) if has_store else None,
        )

    def keep(self, artefact) -> str:
        """Store one piece of evidence now, note it in the audit trail; returns its s3:// URI."""
        target = self.request.targets[0] if self.request.targets else "-"
        obj = self.store.put(self.evidence_prefix() + artefact.name, artefact.body, name=artefact.name,
                             content_type=artefact.content_type, description=artefact.description)
        self.kept.append(obj)
        self.record("evidence.stored", "done", key=obj.key, sha256=obj.sha256, size=obj.size, version_id=obj.version_id)
        if artefact.name == "isolation-record.json":
            # What release restores: the newest record of the instance's configuration before isolation.
            self.connection.set(isolation_key(self.region, target), artefact.body)
        return obj.uri

    def record(self, action: str, outcome: str, **params) -> None:
        r = self.request
        self.audit.append(incident=r.incident or r.channel_id, actor=self.worker, action=action,
                          target=" ".join(r.targets), params={"request": r.id, "command": r.command, **params}, outcome=outcome)

    def seal(self) -> str:
        """Seal the audit records so far; returns a line for the channel ('' if nothing was sealed)."""
        try:
            seal = self.audit.seal(self.store, incident=self.request.incident or self.request.channel_id, actor=self.worker)
        except (ActionError, Exception) as exc:  # a seal that fails must not hide the action's own outcome
            log.error("audit seal failed", error=str(exc))
            return "Audit trail not sealed this time (see the worker log); it will be sealed with the next batch."
        if seal is None:
            return ""
        return f"Audit records {seal.first}-{seal.last} sealed to s3://{self.store.bucket}/{seal.key}; chain head sha256 {seal.head}."


def isolation_key(region: str, instance_id: str) -> str:
    return f"irbot:isolation:{region}:{instance_id}"


# moto can't answer CloudTrail LookupEvents: tests swap this for a fake.
EVENT_SOURCE: EventSource = CloudTrailEvents()


def _bind(request: CommandRequest) -> None:
    job = get_current_job()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request.id, job_id=job.id if job else None, command=request.command)


def _with_context(func):
    """Bind the request's IDs to every log line of the job, and unbind after (a SimpleWorker goes on)."""

    @functools.wraps(func)
    def wrapper(data):
        try:
            return func(data)
        finally:
            structlog.contextvars.clear_contextvars()

    return wrapper


# -- read-only commands and dry runs ------------------------------------------------------


@_with_context
def run_command(data: dict) -> dict:
    """Run one read-only /ir command (or a dry run) and report it in the channel."""
    request = CommandRequest.from_dict(data)
    _bind(request)
    ctx = Context(request)
    log.info("job started", targets=list(request.targets), user=request.user_id, channel=request.channel_id)
    ctx.record("job.started", "running", job_id=ctx.job_id)
    spec = actions.get(request.command)
    try:
        if spec is None:
            raise ActionError(f"/ir {request.command} is not available yet.")
        if spec.risk is Risk.CHANGE and not request.options.get("dry_run"):
            # Worker-side half of the two-person rule: a changing action never runs from this path.
            ctx.record("job.refused", "refused", why="needs approval")
            raise ActionError(f"/ir {request.command} changes AWS and needs approval by a second person; it was not run.")
        handler = HANDLERS.get(request.command, run_steps)
        text, blocks, outcome = handler(ctx)
    except ActionError as exc:
        log.warning("job failed", reason=str(exc))
        ctx.record("job.finished", "failed", error=str(exc))
        text, blocks = messages.failed(request, str(exc))
        _post_with_seal(ctx, text, blocks)
        return {"ok": False, "error": str(exc)}
    except Exception:
        # The channel gets a sentence; the traceback stays in the worker log, and RQ marks the job failed.
        log.exception("job crashed")
        ctx.record("job.finished", "crashed")
        text, blocks = messages.failed(request, f"irbot hit an internal error (request {request.id}); the worker log has the details.")
        _post_with_seal(ctx, text, blocks)
        raise
    ctx.record("job.finished", "ok" if outcome.get("ok") else "failed", notes=outcome.get("notes", []))
    _post_with_seal(ctx, text, blocks, update_ts=outcome.pop("update_ts", None))
    log.info("job finished", **{k: v for k, v in outcome.items() if k not in ("objects", "facts", "steps")})
    return outcome


def incident_changed(ctx: Context) -> None:
    """Redraw the pinned card of the declared incident this request belongs to, if any."""
    incident = ctx.request.incident if ctx.request else ""
    if incident and incident.startswith("IR-"):
        from workers.incidents import redraw_card

        redraw_card(ctx.slack, ctx.connection, incident)


def _post_with_seal(ctx: Context, text: str, blocks: list[dict], update_ts: str | None = None) -> None:
    line = ctx.seal() if ctx.settings.evidence_bucket else ""
    if line:
        text = f"{text}\n{line}"
        blocks = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}][:50]
    if update_ts:
        update(ctx.slack, ctx.request.channel_id, update_ts, text, blocks)
    else:
        post(ctx.slack, ctx.request, text, blocks)
    incident_changed(ctx)


def evidence_prefix(request: CommandRequest, target: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{request.incident or request.channel_id}/{target}/{stamp}-{request.id}/"


def collect(ctx: Context) -> Outcome_:
    request, store = ctx.request, ctx.store
    protection = store.protection()  # before touching the instance: a missing bucket fails fast
    result = collect_action(ctx.session, request.targets[0], ctx.region)
    for artefact in result.artefacts:
        ctx.keep(artefact)
    manifest = {
        "request": request.to_dict() | {"response_url": None},
        "job_id": ctx.job_id,
        "action": result.action,
        "target": result.target,
        "region": result.region,
        "facts": result.facts,
        "notes": result.notes,
        "protection": {"locked": protection.locked, "mode": protection.mode, "retain_until": protection.retain_until},
        "objects": [
            {"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256, "version_id": o.version_id, "description": o.description}
            for o in ctx.kept
        ],
    }
    ctx.keep(Artefact("manifest.json", to_json_bytes(manifest), "application/json", "What was collected, by whom, when, with each object's digest"))
    text, blocks = messages.evidence_saved(request, result, ctx.kept, protection, store.bucket, ctx._prefix)
    outcome = {
        "ok": True,
        "prefix": ctx._prefix,
        "objects": [{"key": o.key, "sha256": o.sha256, "size": o.size} for o in ctx.kept],
        "notes": result.notes,
    }
    return text, blocks, outcome


def run_steps(ctx: Context) -> Outcome_:
    """A read-only action made of steps (or any dry run): one message, redrawn as steps finish."""
    request = ctx.request
    is_dry_run = bool(request.options.get("dry_run"))
    heading = "Dry run" if is_dry_run else "Running"
    text, blocks = messages.steps_report(request, [], ctx.region, state=heading)
    ts = post(ctx.slack, request, text, blocks)
    done: list[dict] = []

    def on_step(step):
        done.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        if ts:
            update(ctx.slack, request.channel_id, ts, *messages.steps_report(request, done, ctx.region, state=heading))

    result = _run_action(ctx, dry_run=is_dry_run, on_step=on_step)
    for artefact in result.artefacts:
        ctx.keep(artefact)
    ok = not any(s.outcome is Outcome.FAILED for s in result.steps)
    final = "Dry run, nothing changed" if is_dry_run else ("Done" if ok else "Done, with failures")
    notes = result.notes + [f"Saved {o.name} (sha256 {o.sha256}) to {o.uri}" for o in ctx.kept]
    text, blocks = messages.steps_report(request, [s.to_dict() for s in result.steps], ctx.region, state=final, notes=notes)
    if request.command == "hunt-key" and not is_dry_run:
        for finding in result.facts.get("findings", []):
            post(ctx.slack, request, *messages.finding_card(request, finding))
    outcome = {"ok": ok, "steps": [s.to_dict() for s in result.steps], "notes": result.notes, "facts": _plain(result.facts)}
    return text, blocks, outcome | ({"update_ts": ts} if ts else {})


def _plain(facts: dict) -> dict:
    return json.loads(json.dumps(facts, default=str))


def _run_action(ctx: Context, *, dry_run: bool, on_step=None, approvers=()) -> Result:
    spec = actions.get(ctx.request.command)
    kwargs = {k: v for k, v in ctx.request.options.items() if k not in ("region", "dry_run")}
    kwargs["context"] = ctx.run_context(approvers)
    target = ctx.request.targets[0]
    if ctx.request.command in ("release", "isolate", "compromise"):
        raw = ctx.connection.get(isolation_key(ctx.region, target))
        kwargs["record"] = json.loads(raw) if raw else None
    if ctx.request.command in ("hunt-key", "revoke-key"):
        kwargs["events"] = EVENT_SOURCE
    if "copy_to_kms" in kwargs:
        kwargs["copy_to_kms"] = kwargs.pop("copy_to_kms")
    return spec.run(ctx.session, target, ctx.region, dry_run=dry_run, on_step=on_step, **kwargs)


HANDLERS: dict[str, Callable[[Context], Outcome_]] = {"collect": collect}


# -- gated commands -----------------------------------------------------------------------


@_with_context
def prepare_request(request_id: str) -> dict:
    """Work out the dry-run plan of a gated request and post it with Approve / Deny buttons."""
    ctx, pending = _load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    try:
        if ctx.request.command == "memory":
            plan = memory.plan(ctx)
        else:
            plan = [s.to_dict() for s in _run_action(ctx, dry_run=True).steps]
    except ActionError as exc:
        ctx.book.plan_failed(request_id, str(exc), actor=ctx.worker)
        text, blocks = messages.failed(ctx.request, str(exc))
        post(ctx.slack, ctx.request, text, blocks)
        return {"ok": False, "error": str(exc)}
    # Pending before the card exists: nobody can click a button on a request still being planned.
    decision = ctx.book.plan_ready(request_id, plan, actor=ctx.worker)
    if not decision.ok:
        log.warning("plan not used", state=decision.state)
        return {"ok": False, "state": decision.state}
    text, blocks = messages.approval_card(decision.request)
    ts = post(ctx.slack, ctx.request, text, blocks)
    if ts:
        ctx.book.attach_message(request_id, ts)
    queue(ctx.connection).enqueue_in(timedelta(seconds=ctx.settings.approval_expiry_seconds + 1), "workers.jobs.expire_request", request_id,
                                     job_id=f"expire-{request_id}", result_ttl=3600)
    incident_changed(ctx)
    return {"ok": decision.ok, "state": decision.state}


@_with_context
def execute_request(request_id: str) -> dict:
    """Run an approved request exactly once, redrawing its card as the steps finish."""
    ctx, pending = _load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    if ctx.request.command in ("stop", "compromise") and pending.state == "approved":
        capturing = ctx.connection.get(memory.active_key(ctx.request.targets[0]))
        if capturing:
            # Stopping now would lose the memory being captured: wait for the capture to end.
            log.info("waiting for a memory capture", capture=capturing.decode())
            queue(ctx.connection).enqueue_in(timedelta(seconds=15), "workers.jobs.execute_request", request_id)
            return {"ok": False, "state": "approved", "waiting_for": capturing.decode()}
    decision = ctx.book.start(request_id, ctx.worker)
    if not decision.ok:
        log.warning("execution refused", reason=decision.reason, state=decision.state)
        redraw(ctx, ctx.book.get(request_id))
        return {"ok": False, "state": decision.state, "error": decision.reason}
    try:
        redraw(ctx, decision.request)
        if ctx.request.command == "memory":
            return memory.start_batch(ctx, decision.request)
    except Exception as exc:  # a request that started must end, whatever failed around it
        log.exception("could not start the request")
        ctx.book.finish(request_id, ctx.worker, ok=False, steps=[], note=f"irbot could not start it: {type(exc).__name__}")
        raise
    steps: list[dict] = []

    def on_step(step):
        steps.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        current = ctx.book.get(request_id)
        current.steps = steps
        redraw(ctx, current)

    try:
        result = _run_action(ctx, dry_run=False, on_step=on_step, approvers=decision.request.approvers)
        for artefact in result.artefacts:
            ctx.keep(artefact)
        ok = not any(s.outcome is Outcome.FAILED for s in result.steps)
        note = "\n".join(result.notes + [f"Saved {o.name} (sha256 {o.sha256}) to {o.uri}" for o in ctx.kept])
    except ActionError as exc:
        ok, note = False, str(exc)
    except Exception:
        log.exception("job crashed")
        ok, note = False, f"irbot hit an internal error (request {request_id}); the worker log has the details."
    final = ctx.book.finish(request_id, ctx.worker, ok=ok, steps=steps, note=note)
    seal_line = ctx.seal()
    pending = final.request or ctx.book.get(request_id)
    if seal_line:
        pending.note = "\n".join(p for p in (pending.note, seal_line) if p)
    redraw(ctx, pending)
    incident_changed(ctx)
    log.info("request finished", ok=ok, steps=len(steps))
    return {"ok": ok, "state": pending.state, "steps": steps}


@_with_context
def expire_request(request_id: str) -> dict:
    """End a request nobody approved in time."""
    ctx, pending = _load(request_id)
    if pending is None:
        return {"ok": False}
    decision = ctx.book.expire(request_id)
    if decision.reason == "not due yet":
        remaining = max(1, int(pending.expires_at - datetime.now(timezone.utc).timestamp()) + 1)
        queue(ctx.connection).enqueue_in(timedelta(seconds=remaining), "workers.jobs.expire_request", request_id)
        return {"ok": False, "state": pending.state}
    if decision.ok:
        redraw(ctx, decision.request)
        incident_changed(ctx)
    return {"ok": decision.ok, "state": decision.state}


def _load(request_id: str):
    """The Context and stored request for ``request_id``; (None, None) if it is unknown."""
    ctx = Context(None)
    pending = ctx.book.get(request_id)
    if pending is None:
        log.error("unknown request", request=request_id)
        return None, None
    ctx.request = pending.request
    _bind(pending.request)
    return ctx, pending


def redraw(ctx: Context, pending) -> None:
    """Draw the request's card again in place (or post it, if it has no message yet)."""
    if pending is None:
        return
    text, blocks = messages.approval_card(pending)
    if pending.message_ts:
        update(ctx.slack, pending.request.channel_id, pending.message_ts, text, blocks)
    else:
        post(ctx.slack, pending.request, text, blocks)
