"""Fan-out requests (memory captures): one RQ job per target, so several workers share a large batch,
then one job that ends the request once every target's job has ended, however it ended. The
ordinary ending is RQ's own: the ending job depends on the target jobs, failures allowed. A target
job that is stopped, or abandoned by a worker that died, doesn't release its dependents in RQ: its
on_stopped / on_failure callback marks its row failed and, once every row has ended, queues the
ending itself. The ending runs once whichever way it was reached. One channel message per batch
shows each target's bytes, speed, ETA and state.

Each target's row is a field of its own in the batch's hash, so targets never write over each
other. Each worker process runs one target at a time: the bound on concurrent captures is the
number of worker processes listening on the action's queue.
"""

from __future__ import annotations

import json

from redis import Redis
from rq import Callback, Retry
from rq.job import Dependency

from actions.memory import Progress
from actions.registry import ActionSpec
from actions.steps import Outcome, StepLog
from chat import messages
from core.approvals import RUNNING
from core.logs import get_logger
from core.queues import queue
from workers.context import JobContext
from workers.running import finish, load, run_action
from actions.words import plural

log = get_logger(__name__)
REDRAW_EVERY_SECONDS = 3
KEEP_SECONDS = 30 * 24 * 3600
ENDED_STATES = ("complete", "failed")


def batch_key(request_id: str) -> str:
    return f"irbot:batch:{request_id}"


def active_key(target: str) -> str:
    """Set while ``target`` is being captured, so an action that loses its memory waits for it."""
    return f"irbot:memory:active:{target}"


def start(ctx: JobContext, pending, spec: ActionSpec) -> dict:
    """Fan the approved request out: one job per target, one job that ends the request, and the progress message."""
    request = pending.request
    rows = {t: {"state": "queued", "done": 0, "expected": None, "rate": 0.0} for t in request.targets}
    # In the thread of the request's card: the card says where the batch stands, the thread how each target goes.
    ts = ctx.slack.reply(request, *messages.memory_progress(request, rows), thread_ts=pending.message_ts) or ""
    key = batch_key(request.id)
    ctx.connection.hset(key, mapping={"ts": ts, "approvers": json.dumps(pending.approvers),
                                      **{f"row:{t}": json.dumps(row) for t, row in rows.items()}})
    ctx.connection.expire(key, KEEP_SECONDS)
    ended_badly = Callback("workers.batches.target_ended_badly")
    work = queue(ctx.connection, spec.queue)
    jobs = [work.enqueue("workers.batches.run_target", {"request": request.id, "target": target}, job_id=f"target-{request.id}-{n}",
                         job_timeout=spec.timeout_seconds, result_ttl=KEEP_SECONDS, failure_ttl=KEEP_SECONDS,
                         on_failure=ended_badly, on_stopped=ended_badly)
            for n, target in enumerate(request.targets)]
    _enqueue_end(ctx.connection, request.id, depends_on=Dependency(jobs=jobs, allow_failure=True))
    log.info("batch started", targets=list(request.targets))
    return {"ok": True, "state": "running", "targets": list(request.targets)}


def _enqueue_end(connection: Redis, request_id: str, *, depends_on=None, suffix: str = "") -> None:
    queue(connection).enqueue("workers.batches.end_batch", request_id, job_id=f"end-{request_id}{suffix}", result_ttl=KEEP_SECONDS,
                              depends_on=depends_on, retry=Retry(max=3, interval=[5, 30, 120]))


def run_target(data: dict) -> dict:
    """Run the request's action on one target of its batch (an RQ job of its own)."""
    whole, pending = load(data["request"])
    if pending is None:
        return {"ok": False}
    target = data["target"]
    ctx = whole.for_target(target)
    spec = ctx.spec
    if pending.state != RUNNING:
        # The request ended (it failed to start, or was ended for good): nothing more runs on any host.
        _set_row(ctx.connection, pending.id, target, state="failed", reason=f"not run: the request is {pending.state}")
        return {"ok": False, "target": target, "error": f"the request is {pending.state}"}
    approvers = json.loads(ctx.connection.hget(batch_key(pending.id), "approvers") or "[]")

    def on_progress(progress: Progress) -> None:
        set_row(ctx, pending, target, state="capturing", done=progress.done, expected=progress.expected, rate=progress.rate)

    def on_step(step) -> None:
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)

    try:
        ctx.connection.set(active_key(target), pending.id, ex=12 * 3600)
        set_row(ctx, pending, target, state="connecting", force=True)
        result = run_action(ctx, spec, target, dry_run=False, steps=StepLog(on_step), approvers=approvers, on_progress=on_progress)
        for artefact in result.artefacts:
            ctx.keep(artefact)
        failed = [s.detail for s in result.steps if s.outcome is Outcome.FAILED]
        custody = result.facts.get("custody", {})
    except Exception as exc:  # one target's failure must not touch the others, nor leave the batch hanging
        log.exception("target crashed")
        failed, custody = [f"irbot failed: {type(exc).__name__} {exc}".strip()], {}
    finally:
        _release(ctx.connection, target, pending.id)
    reason = failed[0] if failed else ""
    # The target's chain of custody, in the audit trail as "<action>.custody".
    ctx.record(f"{spec.name}.custody", "failed" if failed else "complete", **{k: v for k, v in custody.items() if k != "command"},
               command=custody.get("command"))
    set_row(ctx, pending, target, state="failed" if failed else "complete", reason=reason, sha256=custody.get("sha256"),
            done=custody.get("bytes"), uri=custody.get("s3"), force=True)
    return {"ok": not failed, "target": target, "sha256": custody.get("sha256"), "error": reason}


def target_ended_badly(job, connection: Redis, *exc_info) -> None:
    """RQ's callback for a target job that failed, was stopped, or was abandoned by a worker that died:
    its row says so, its host is free again, and the last target to end queues the request's ending."""
    data = job.args[0] if job.args else {}
    request_id, target = data.get("request", ""), data.get("target", "")
    why = "its worker died" if exc_info and type(exc_info[1]).__name__ == "AbandonedJobError" else \
        "it was stopped" if not exc_info else "it failed"
    row = json.loads(connection.hget(batch_key(request_id), f"row:{target}") or "{}")
    if row.get("state") not in ENDED_STATES:
        _set_row(connection, request_id, target, state="failed", reason=f"{why} before it finished")
        _abort_uploads(request_id, target)
    _release(connection, target, request_id)
    rows = _read_rows(connection, request_id)
    if rows and all(r.get("state") in ENDED_STATES for r in rows.values()):
        _enqueue_end(connection, request_id, suffix="-now")


def end_batch(request_id: str) -> dict:
    """The request's last job, run once every target's job has ended: its card, its audit record, the seal. Runs once."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": False}
    key = batch_key(request_id)
    if not ctx.connection.set(f"{key}:ended", 1, nx=True, ex=KEEP_SECONDS):
        return {"ok": True, "ended": "already"}
    spec = ctx.spec
    rows = _read_rows(ctx.connection, request_id)
    for target, row in rows.items():
        if row.get("state") not in ENDED_STATES:
            row.update(state="failed", reason="its job ended without finishing")
            _release(ctx.connection, target, request_id)
    complete = [t for t, r in rows.items() if r.get("state") == "complete"]
    steps = [{"name": f"{pending.request.command}:{t}", "title": spec.target_title.format(target=t),
              "outcome": "done" if t in complete else "failed",
              "detail": f"{r.get('done')} bytes, sha256 {r.get('sha256')}" if t in complete else r.get("reason", "")}
             for t, r in rows.items()]
    note = f"{len(complete)} of {len(rows)} {plural(len(rows), spec.batch_word.removesuffix('s'), spec.batch_word)} complete."
    failed = [t for t in rows if t not in complete]
    if failed:
        note += f" To try again: `/ir {pending.request.command} {' '.join(failed)}`."
    try:
        finish(ctx, request_id, ok=not failed, steps=steps, note=note)
    except Exception:
        ctx.connection.delete(f"{key}:ended")  # let RQ's retry end it
        raise
    try:
        redraw_progress(ctx, pending)
    except Exception as exc:  # the progress message is a view; the request has ended
        log.error("progress redraw failed", error=type(exc).__name__)
    return {"ok": len(complete) == len(rows), "complete": complete}


def _abort_uploads(request_id: str, target: str) -> None:
    """A stream its dead job left open is thrown away: nothing half-written looks like evidence."""
    ctx, pending = load(request_id)
    if pending is None or not ctx.settings.evidence_bucket:
        return
    request = pending.request
    try:
        aborted = ctx.store.abort_unfinished(ctx.target_prefix(target), f"-{request_id}/")
        log.info("unfinished uploads aborted", target=target, count=len(aborted))
    except Exception as exc:  # the batch must still end; S3 expires abandoned uploads by its own lifecycle rules too
        log.error("could not abort unfinished uploads", target=target, error=str(exc))


def _release(connection: Redis, target: str, request_id: str) -> None:
    """Clear the target's busy flag, if this request still holds it."""
    key = active_key(target)
    if (connection.get(key) or b"").decode() == request_id:
        connection.delete(key)


def _read_rows(connection: Redis, request_id: str) -> dict[str, dict]:
    fields = connection.hgetall(batch_key(request_id))
    return {k.decode()[4:]: json.loads(v) for k, v in fields.items() if k.startswith(b"row:")}


def _set_row(connection: Redis, request_id: str, target: str, **fields) -> None:
    key = batch_key(request_id)
    # Only this target's job (or its callback, once the job is over) writes this field.
    row = json.loads(connection.hget(key, f"row:{target}") or "{}")
    row.update({k: v for k, v in fields.items() if v is not None})
    connection.hset(key, f"row:{target}", json.dumps(row))


def set_row(ctx: JobContext, pending, target: str, *, force: bool = False, **fields) -> None:
    _set_row(ctx.connection, pending.id, target, **fields)
    # At most one redraw every few seconds across all the batch's jobs, except for state changes.
    if force or ctx.connection.set(f"{batch_key(pending.id)}:redraw", 1, nx=True, ex=REDRAW_EVERY_SECONDS):
        try:
            redraw_progress(ctx, pending)
        except Exception as exc:  # the message is a view; the work and the batch must go on without it
            log.error("progress redraw failed", error=type(exc).__name__)


def redraw_progress(ctx: JobContext, pending) -> None:
    ts = (ctx.connection.hget(batch_key(pending.id), "ts") or b"").decode()
    if ts:
        ctx.slack.update(pending.request.channel_id, ts, *messages.memory_progress(pending.request, _read_rows(ctx.connection, pending.id)))
