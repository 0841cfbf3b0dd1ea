"""Fan-out requests (memory captures): one RQ job per target, so several workers share a large batch,
then one job that ends the request once every target's job has ended, however it ended (RQ's own
job dependencies with allow_failure). One channel message per batch shows each target's bytes,
speed, ETA and state.

Each target's row is a field of its own in the batch's hash, so targets never write over each
other. Each worker process runs one target at a time: the bound on concurrent captures is the
number of worker processes listening on the action's queue.
"""

from __future__ import annotations

import json

from rq.job import Dependency

from actions.memory import Progress
from actions.registry import ActionSpec
from actions.steps import Outcome, StepLog
from chat import messages
from core.logs import get_logger
from core.queues import queue
from workers.context import JobContext
from workers.running import finish, load, run_action

log = get_logger(__name__)
REDRAW_EVERY_SECONDS = 3
KEEP_SECONDS = 30 * 24 * 3600


def batch_key(request_id: str) -> str:
    return f"irbot:batch:{request_id}"


def active_key(target: str) -> str:
    """Set while ``target`` is being captured, so an action that loses its memory waits for it."""
    return f"irbot:memory:active:{target}"


def start(ctx: JobContext, pending, spec: ActionSpec) -> dict:
    """Fan the approved request out: one job per target, one job that ends the request, and the progress message."""
    request = pending.request
    rows = {t: {"state": "queued", "done": 0, "expected": None, "rate": 0.0} for t in request.targets}
    ts = ctx.slack.reply(request, *messages.memory_progress(request, rows)) or ""
    key = batch_key(request.id)
    ctx.connection.hset(key, mapping={"ts": ts, "approvers": json.dumps(pending.approvers),
                                      **{f"row:{t}": json.dumps(row) for t, row in rows.items()}})
    ctx.connection.expire(key, KEEP_SECONDS)
    work = queue(ctx.connection, spec.queue)
    jobs = [work.enqueue("workers.batches.run_target", {"request": request.id, "target": target}, job_id=f"target-{request.id}-{n}",
                         job_timeout=spec.timeout_seconds, result_ttl=KEEP_SECONDS, failure_ttl=KEEP_SECONDS)
            for n, target in enumerate(request.targets)]
    queue(ctx.connection).enqueue("workers.batches.end_batch", request.id, job_id=f"end-{request.id}", result_ttl=KEEP_SECONDS,
                                  depends_on=Dependency(jobs=jobs, allow_failure=True))
    log.info("batch started", targets=list(request.targets))
    return {"ok": True, "state": "running", "targets": list(request.targets)}


def run_target(data: dict) -> dict:
    """Run the request's action on one target of its batch (an RQ job of its own)."""
    whole, pending = load(data["request"])
    if pending is None:
        return {"ok": False}
    target = data["target"]
    ctx = whole.for_target(target)
    approvers = json.loads(ctx.connection.hget(batch_key(pending.id), "approvers") or "[]")

    def on_progress(progress: Progress) -> None:
        set_row(ctx, pending, target, state="capturing", done=progress.done, expected=progress.expected, rate=progress.rate)

    def on_step(step) -> None:
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)

    ctx.connection.set(active_key(target), pending.id, ex=12 * 3600)
    set_row(ctx, pending, target, state="connecting", force=True)
    try:
        result = run_action(ctx, ctx.spec, target, dry_run=False, steps=StepLog(on_step), approvers=approvers, on_progress=on_progress)
        for artefact in result.artefacts:
            ctx.keep(artefact)
        failed = [s.detail for s in result.steps if s.outcome is Outcome.FAILED]
        custody = result.facts.get("custody", {})
    except Exception as exc:  # one target's failure must not touch the others, nor leave the batch hanging
        log.exception("target crashed")
        failed, custody = [f"irbot failed: {type(exc).__name__} {exc}".strip()], {}
    finally:
        ctx.connection.delete(active_key(target))
    reason = failed[0] if failed else ""
    details = {k: v for k, v in custody.items() if k not in ("command", "target")}
    ctx.record("target.finished", "failed" if failed else "complete", **details, custody_command=custody.get("command"), reason=reason)
    set_row(ctx, pending, target, state="failed" if failed else "complete", reason=reason, sha256=custody.get("sha256"),
            done=custody.get("bytes"), uri=custody.get("s3"), force=True)
    return {"ok": not failed, "target": target, "sha256": custody.get("sha256"), "error": reason}


def end_batch(request_id: str) -> dict:
    """The request's last job, run once every target's job has ended: its card, its audit record, the seal."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": False}
    rows = _rows(ctx, request_id)
    for target, row in rows.items():
        if row.get("state") not in ("complete", "failed"):
            # Its job ended without saying how (it was killed): it did not complete.
            row.update(state="failed", reason="its job ended without finishing")
    complete = [t for t, r in rows.items() if r.get("state") == "complete"]
    steps = [{"name": f"{pending.request.command}:{t}", "title": f"Capture {t}'s memory",
              "outcome": "done" if t in complete else "failed",
              "detail": f"{r.get('done')} bytes, sha256 {r.get('sha256')}" if t in complete else r.get("reason", "")}
             for t, r in rows.items()]
    redraw_progress(ctx, pending)
    finish(ctx, request_id, ok=len(complete) == len(rows), steps=steps, note=f"{len(complete)} of {len(rows)} captures complete.")
    return {"ok": len(complete) == len(rows), "complete": complete}


def _rows(ctx: JobContext, request_id: str) -> dict[str, dict]:
    fields = ctx.connection.hgetall(batch_key(request_id))
    return {k.decode()[4:]: json.loads(v) for k, v in fields.items() if k.startswith(b"row:")}


def set_row(ctx: JobContext, pending, target: str, *, force: bool = False, **fields) -> None:
    key = batch_key(pending.id)
    # Only this target's job writes this field, so reading and writing it back races with nobody.
    row = json.loads(ctx.connection.hget(key, f"row:{target}") or "{}")
    row.update({k: v for k, v in fields.items() if v is not None})
    ctx.connection.hset(key, f"row:{target}", json.dumps(row))
    # At most one redraw every few seconds across all the batch's jobs, except for state changes.
    if force or ctx.connection.set(f"{key}:redraw", 1, nx=True, ex=REDRAW_EVERY_SECONDS):
        try:
            redraw_progress(ctx, pending)
        except Exception as exc:  # the message is a view; the work and the batch must go on without it
            log.error("progress redraw failed", error=type(exc).__name__)


def redraw_progress(ctx: JobContext, pending) -> None:
    ts = (ctx.connection.hget(batch_key(pending.id), "ts") or b"").decode()
    if ts:
        ctx.slack.update(pending.request.channel_id, ts, *messages.memory_progress(pending.request, _rows(ctx, pending.id)))
