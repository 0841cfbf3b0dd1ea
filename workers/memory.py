"""Memory capture batches: one RQ job per target, so several workers share a large batch, and one
channel message per batch showing each target's bytes, speed, ETA and state.

Each worker process runs one capture at a time: the bound on concurrent captures is the number
of worker processes listening on the memory queue.
"""

from __future__ import annotations

import dataclasses
import json
import time

from redis.exceptions import WatchError
from rq import Queue

from actions.memory import MemorySettings, Progress
from actions.memory import capture as capture_action
from actions.steps import Outcome
from workers import messages
from workers.logs import get_logger
from workers.queues import MEMORY_QUEUE, SERIALIZER
from workers.report import post, update
from workers.settings import Settings

log = get_logger(__name__)
REDRAW_EVERY_SECONDS = 3


def batch_key(request_id: str) -> str:
    return f"irbot:memory:{request_id}"


def active_key(target: str) -> str:
    """Set while ``target`` is being captured, so a stop of that instance waits for it."""
    return f"irbot:memory:active:{target}"


def memory_settings(settings: Settings) -> MemorySettings | None:
    if not settings.ssh_key:
        return None
    return MemorySettings(
        key_path=settings.ssh_key, command=settings.memory_command, size_command=settings.memory_size_command,
        known_hosts=settings.ssh_known_hosts, user=settings.ssh_user, bastion=settings.ssh_bastion,
        stall_seconds=settings.memory_stall_seconds,
    )


def plan(ctx) -> list[dict]:
    """The dry run of every target, for the approval card."""
    steps = []
    for target in ctx.request.targets:
        one = dataclasses.replace(ctx.request, targets=(target,))
        result = capture_action(ctx.session, target, ctx.region, dry_run=True, context=ctx.for_request(one).run_context(),
                                public=bool(ctx.request.options.get("public")))
        steps.extend(s.to_dict() for s in result.steps)
    return steps


def start_batch(ctx, pending) -> dict:
    """Fan the approved request out: one capture job per target, and the batch's progress message."""
    request = pending.request
    rows = {t: {"state": "queued", "done": 0, "expected": None, "rate": 0.0} for t in request.targets}
    text, blocks = messages.memory_progress(request, rows)
    ts = post(ctx.slack, request, text, blocks) or ""
    ctx.connection.hset(batch_key(request.id), mapping={"rows": json.dumps(rows), "ts": ts, "ended": 0, "failed": 0,
                                                        "approvers": json.dumps(pending.approvers)})
    ctx.connection.expire(batch_key(request.id), 30 * 24 * 3600)
    queue = Queue(MEMORY_QUEUE, connection=ctx.connection, serializer=SERIALIZER)
    for target in request.targets:
        queue.enqueue("workers.memory.capture_target", {"request": request.id, "target": target},
                      job_id=f"mem-{request.id}-{abs(hash(target)) % 10**8}", job_timeout=12 * 3600, result_ttl=30 * 24 * 3600)
    log.info("memory batch started", targets=list(request.targets))
    return {"ok": True, "state": "running", "targets": list(request.targets)}


def capture_target(data: dict) -> dict:
    """Capture one target of a batch (an RQ job of its own)."""
    from workers import jobs

    ctx, pending = jobs._load(data["request"])
    if pending is None:
        return {"ok": False}
    target = data["target"]
    ctx = ctx.for_request(dataclasses.replace(pending.request, targets=(target,)))
    batch = batch_key(pending.id)
    approvers = json.loads(ctx.connection.hget(batch, "approvers") or "[]")
    settings = ctx.settings
    part_size = settings.memory_part_mib << 20

    def open_sink(name: str):
        return ctx.store.open_stream(ctx.evidence_prefix() + name, name=name, part_size=part_size)

    def on_progress(progress: Progress) -> None:
        _set_row(ctx, pending, target, state="capturing", done=progress.done, expected=progress.expected, rate=progress.rate)

    def on_step(step) -> None:
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)

    ctx.connection.set(active_key(target), pending.id, ex=12 * 3600)
    _set_row(ctx, pending, target, state="connecting", force=True)
    try:
        context = dataclasses.replace(ctx.run_context(approvers), open_sink=open_sink, on_progress=on_progress,
                                      memory=memory_settings(settings))
        result = capture_action(ctx.session, target, ctx.region, context=context, on_step=on_step,
                                public=bool(pending.request.options.get("public")))
        for artefact in result.artefacts:
            ctx.keep(artefact)
        failed = [s for s in result.steps if s.outcome is Outcome.FAILED]
        custody = result.facts.get("custody", {})
        ctx.record("memory.custody", "failed" if failed else "complete", **{k: v for k, v in custody.items() if k != "command"},
                   command=custody.get("command"))
    except Exception as exc:  # one target's failure must not touch the others, nor leave the batch hanging
        log.exception("capture crashed")
        failed, custody = [f"irbot failed: {type(exc).__name__} {exc}".strip()], {}
    finally:
        ctx.connection.delete(active_key(target))
    reason = (failed[0].detail if hasattr(failed[0], "detail") else failed[0]) if failed else ""
    try:
        _set_row(ctx, pending, target, state="failed" if failed else "complete", reason=reason, sha256=custody.get("sha256"),
                 done=custody.get("bytes"), uri=custody.get("s3"), force=True)
    finally:
        _maybe_finish(ctx, pending, failed=bool(failed))  # counted whatever happened, so the batch always ends
    return {"ok": not failed, "target": target, "sha256": custody.get("sha256"), "error": reason}


def _set_row(ctx, pending, target: str, *, force: bool = False, **fields) -> None:
    key = batch_key(pending.id)
    with ctx.connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(key)
                rows = json.loads(pipe.hget(key, "rows") or "{}")
                rows.setdefault(target, {}).update({k: v for k, v in fields.items() if v is not None})
                pipe.multi()
                pipe.hset(key, "rows", json.dumps(rows))
                pipe.execute()
                break
            except WatchError:  # another target of the batch wrote first: read again
                continue
    # At most one redraw every few seconds across all the batch's jobs, except for state changes.
    if force or ctx.connection.set(f"{key}:redraw", 1, nx=True, ex=REDRAW_EVERY_SECONDS):
        try:
            redraw_progress(ctx, pending)
        except Exception as exc:  # the message is a view; the capture and the batch must go on without it
            log.error("progress redraw failed", error=type(exc).__name__)


def redraw_progress(ctx, pending) -> None:
    key = batch_key(pending.id)
    ts = (ctx.connection.hget(key, "ts") or b"").decode()
    rows = json.loads(ctx.connection.hget(key, "rows") or "{}")
    if ts:
        update(ctx.slack, pending.request.channel_id, ts, *messages.memory_progress(pending.request, rows))


def _maybe_finish(ctx, pending, *, failed: bool) -> None:
    """The last target to end finishes the request: its card, its audit record, the seal."""
    from workers import jobs

    key = batch_key(pending.id)
    if failed:
        ctx.connection.hincrby(key, "failed", 1)
    ended = ctx.connection.hincrby(key, "ended", 1)
    if ended < len(pending.request.targets):
        return
    failures = int(ctx.connection.hget(key, "failed") or 0)
    rows = json.loads(ctx.connection.hget(key, "rows") or "{}")
    steps = [{"name": f"memory:{t}", "title": f"Capture {t}'s memory", "outcome": "done" if r.get("state") == "complete" else "failed",
              "detail": f"{r.get('done')} bytes, sha256 {r.get('sha256')}" if r.get("state") == "complete" else r.get("reason", "")}
             for t, r in rows.items()]
    note = f"{len(rows) - failures} of {len(rows)} captures complete."
    final = ctx.book.finish(pending.id, ctx.worker, ok=failures == 0, steps=steps, note=note)
    seal_line = ctx.seal()
    card = final.request or ctx.book.get(pending.id)
    if seal_line:
        card.note = "\n".join(p for p in (card.note, seal_line) if p)
    jobs.redraw(ctx, card)
    redraw_progress(ctx, pending)
    jobs.incident_changed(ctx)
