"""Job wrappers: what an RQ worker runs for each /ir command.

Read-only commands run straight away (run_command). Gated commands go through
the approval book: prepare_request posts the dry-run plan with the buttons,
execute_request runs the approved action once, expire_request ends what nobody
approved in time.
"""

from __future__ import annotations

import functools
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Callable

import boto3
import structlog
from redis import Redis
from rq import Queue, get_current_job
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

import actions
from actions import aws
from actions.artefacts import Result, to_json_bytes
from actions.collect import collect as collect_action
from actions.errors import ActionError
from actions.registry import Risk
from actions.steps import Outcome
from workers import messages
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
        self.slack.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=3)]
        self.audit = AuditTrail(self.connection)
        self.book: ApprovalBook = book_from_settings(self.settings, self.connection, self.slack)
        self.worker = f"worker:{socket.gethostname()}"
        self._session: boto3.Session | None = None
        self._store: EvidenceStore | None = None

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
        handler = HANDLERS.get(request.command, dry_run)
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
    _post_with_seal(ctx, text, blocks)
    log.info("job finished", **{k: v for k, v in outcome.items() if k != "objects"})
    return outcome


def _post_with_seal(ctx: Context, text: str, blocks: list[dict]) -> None:
    line = ctx.seal() if ctx.settings.evidence_bucket else ""
    if line:
        text = f"{text}\n{line}"
        blocks = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}][:50]
    post(ctx.slack, ctx.request, text, blocks)


def evidence_prefix(request: CommandRequest, target: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{request.incident or request.channel_id}/{target}/{stamp}-{request.id}/"


def collect(ctx: Context) -> Outcome_:
    request, store = ctx.request, ctx.store
    instance_id = request.targets[0]
    protection = store.protection()  # before touching the instance: a missing bucket fails fast
    result = collect_action(ctx.session, instance_id, ctx.region)

    prefix = evidence_prefix(request, instance_id)
    stored: list[StoredObject] = []
    for artefact in result.artefacts:
        obj = store.put(prefix + artefact.name, artefact.body, name=artefact.name, content_type=artefact.content_type, description=artefact.description)
        stored.append(obj)
        ctx.record("evidence.stored", "done", key=obj.key, sha256=obj.sha256, size=obj.size, version_id=obj.version_id)
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
            for o in stored
        ],
    }
    obj = store.put(prefix + "manifest.json", to_json_bytes(manifest), name="manifest.json", content_type="application/json",
                    description="What was collected, by whom, when, with each object's digest")
    stored.append(obj)
    ctx.record("evidence.stored", "done", key=obj.key, sha256=obj.sha256, size=obj.size, version_id=obj.version_id)
    text, blocks = messages.evidence_saved(request, result, stored, protection, store.bucket, prefix)
    outcome = {
        "ok": True,
        "prefix": prefix,
        "objects": [{"key": o.key, "sha256": o.sha256, "size": o.size} for o in stored],
        "notes": result.notes,
    }
    return text, blocks, outcome


def dry_run(ctx: Context) -> Outcome_:
    """A changing action's plan against the current state, changing nothing."""
    result = _run_action(ctx, dry_run=True)
    text, blocks = messages.steps_report(ctx.request, result, dry_run=True)
    return text, blocks, {"ok": not any(s.outcome is Outcome.FAILED for s in result.steps), "steps": [s.to_dict() for s in result.steps]}


def _run_action(ctx: Context, *, dry_run: bool, on_step=None) -> Result:
    spec = actions.get(ctx.request.command)
    kwargs = {k: v for k, v in ctx.request.options.items() if k not in ("region", "dry_run")}
    return spec.run(ctx.session, ctx.request.targets[0], ctx.region, dry_run=dry_run, on_step=on_step, **kwargs)


HANDLERS: dict[str, Callable[[Context], Outcome_]] = {"collect": collect}


# -- gated commands -----------------------------------------------------------------------


@_with_context
def prepare_request(request_id: str) -> dict:
    """Work out the dry-run plan of a gated request and post it with Approve / Deny buttons."""
    ctx, pending = _load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    try:
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
    return {"ok": decision.ok, "state": decision.state}


@_with_context
def execute_request(request_id: str) -> dict:
    """Run an approved request exactly once, redrawing its card as the steps finish."""
    ctx, pending = _load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    decision = ctx.book.start(request_id, ctx.worker)
    if not decision.ok:
        log.warning("execution refused", reason=decision.reason, state=decision.state)
        redraw(ctx, ctx.book.get(request_id))
        return {"ok": False, "state": decision.state, "error": decision.reason}
    redraw(ctx, decision.request)
    steps: list[dict] = []

    def on_step(step):
        steps.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        current = ctx.book.get(request_id)
        current.steps = steps
        redraw(ctx, current)

    try:
        result = _run_action(ctx, dry_run=False, on_step=on_step)
        ok = not any(s.outcome is Outcome.FAILED for s in result.steps)
        note = ""
    except ActionError as exc:
        ok, note = False, str(exc)
    except Exception:
        log.exception("job crashed")
        ok, note = False, f"irbot hit an internal error (request {request_id}); the worker log has the details."
    final = ctx.book.finish(request_id, ctx.worker, ok=ok, steps=steps, note=note)
    seal_line = ctx.seal()
    pending = final.request or ctx.book.get(request_id)
    if seal_line:
        pending.note = " ".join(p for p in (pending.note, seal_line) if p)
    redraw(ctx, pending)
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
