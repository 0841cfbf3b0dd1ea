"""When a worker dies in the middle of a job (SIGKILL, out of memory, a lost node): RQ notices the job
stopped sending heartbeats, marks it abandoned and calls its on_failure callback (on_stopped when an
operator stopped it). The callbacks here make sure the request still ends, exactly once: a gated
request is resumed or ended failed as its action declares (Recovery), a read-only command is
ended with a sentence in the channel.
"""

from __future__ import annotations

import uuid
from datetime import timedelta, timezone

from redis import Redis
from rq import Callback, Worker

from actions.registry import Recovery
from chat import messages
from core.approvals import APPROVED, RUNNING
from core.logs import get_logger
from core.queues import enqueue_execution, queue
from core.request import CommandRequest
from workers.context import JobContext, bind_logs
from workers.running import conclude, finish, load, run_started
from workers.worker import JOB_HEARTBEAT_SECONDS
from actions.words import count

log = get_logger(__name__)
MAX_RESUMES = 2  # a request whose every run kills its worker is ended, not run forever
STOPPED = "stopped"


def request_died(job, connection: Redis, *exc_info) -> None:
    """RQ's callback for a job of a request (its run, or its recovery) that failed, was stopped, or was
    abandoned: queue the request's recovery, which itself is guarded the same way."""
    request_id = job.args[0] if job.args else ""
    why = type(exc_info[1]).__name__ if len(exc_info) > 1 else STOPPED
    log.warning("request's job ended abnormally", request=request_id, why=why)
    enqueue_recovery(connection, request_id, why, getattr(job, "worker_name", "") or "")


def enqueue_recovery(connection: Redis, request_id: str, why: str, worker: str = "", *, delay: int = 0) -> None:
    died = Callback("workers.recovery.request_died")
    args = dict(job_id=f"recover-{request_id}-{uuid.uuid4().hex[:8]}", result_ttl=30 * 24 * 3600, job_timeout=60 * 60,
                on_failure=died, on_stopped=died)
    if delay:
        queue(connection).enqueue_in(timedelta(seconds=delay), "workers.recovery.recover_request", request_id, why, worker, **args)
    else:
        queue(connection).enqueue("workers.recovery.recover_request", request_id, why, worker, **args)


def _still_alive(connection: Redis, worker: str) -> bool:
    """Whether the worker that ran the job beat within the last few seconds: then its horse may still be at work."""
    if not worker:
        return False
    seconds, _ = connection.time()
    for found in Worker.all(connection=connection):
        if found.name == worker and found.last_heartbeat is not None:
            beat = found.last_heartbeat if found.last_heartbeat.tzinfo else found.last_heartbeat.replace(tzinfo=timezone.utc)
            return seconds - beat.timestamp() < 3 * JOB_HEARTBEAT_SECONDS
    return False


def recover_request(request_id: str, why: str = "", worker: str = "") -> dict:
    """Resume or end a request whose job ended without ending it."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": True, "state": None, "recovered": False}
    if pending.state == APPROVED:
        # Its run never started: queue it again (the approval book still lets only one run start).
        enqueue_execution(ctx.connection, request_id)
        return {"ok": True, "state": APPROVED, "recovered": True}
    if pending.state != RUNNING:
        return {"ok": True, "state": pending.state, "recovered": False}
    if _still_alive(ctx.connection, worker) and why != STOPPED:
        # Its worker lost Redis for a while but lives: its horse may still be running the steps. Look again later.
        enqueue_recovery(ctx.connection, request_id, why, worker, delay=30)
        return {"ok": True, "state": RUNNING, "recovered": False, "waiting_for": worker}
    spec = ctx.spec
    attempts = ctx.connection.hincrby(f"irbot:recovery:{request_id}", "attempts", 1)
    ctx.connection.expire(f"irbot:recovery:{request_id}", 30 * 24 * 3600)
    # An operator who stopped the job meant it: end it, don't run it again.
    if spec is not None and spec.recovery is Recovery.RESUME and attempts <= MAX_RESUMES and why != STOPPED:
        ctx.record("job.resumed", "running", why=why or "its worker died", attempt=attempts)
        return run_started(ctx, request_id, pending.approvers, resumed=True)
    done = _steps_so_far(ctx, request_id)
    note = (f"The worker running it died ({why or 'no heartbeat'}) and irbot did not run it again"
            f"{' after ' + count(attempts - 1, 'resume') if attempts > 1 else ''}: {count(len(done), 'step')} done, listed above. "
            "Run the command again to finish it; every step looks before it acts.")
    finish(ctx, request_id, ok=False, steps=done, note=note)
    return {"ok": False, "state": "failed", "recovered": True}


def _steps_so_far(ctx: JobContext, request_id: str) -> list[dict]:
    records = ctx.audit.for_incident(ctx.request.incident or ctx.request.channel_id)
    return [{"name": r["params"].get("step", ""), "title": r["params"].get("title", ""), "outcome": r.get("outcome", ""),
             "detail": r["params"].get("detail", "")} for r in records if r["action"] == "step" and r["params"].get("request") == request_id]


def command_died(job, connection: Redis, *exc_info) -> None:
    """RQ's callback for a read-only command's job that crashed, was stopped or was abandoned: the channel is told."""
    data = job.args[0] if job.args else {}
    if not isinstance(data, dict) or not data.get("id"):
        return
    request = CommandRequest.from_dict(data)
    if any(r["action"] == "job.finished" and r["params"].get("request") == request.id
           for r in JobContext(request).audit.for_incident(request.incident or request.channel_id)):
        return  # it ended, and said so, before it failed (a crash after the channel was told)
    queue(connection).enqueue("workers.recovery.end_command", data, job_id=f"end-{job.id}", result_ttl=7 * 24 * 3600)


def end_command(data: dict) -> dict:
    request = CommandRequest.from_dict(data)
    bind_logs(request)
    ctx = JobContext(request)
    ctx.record("job.finished", "failed", error="its worker died")
    conclude(ctx, messages.failed(request, f"the worker running it stopped before it finished (request {request.id}); "
                                                  "nothing more will happen. Run the command again."))
    return {"ok": False}
