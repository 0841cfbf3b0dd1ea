"""When a worker dies in the middle of a job (SIGKILL, out of memory, a lost node): RQ notices the job
stopped sending heartbeats, marks it abandoned and calls its on_failure callback (on_stopped when an
operator stopped it). The callbacks here make sure the request still ends, exactly once: a gated
request is resumed or ended failed as its action declares (Recovery), a read-only command is
ended with a sentence in the channel.
"""

from __future__ import annotations

from redis import Redis

from actions.registry import Recovery
from chat import messages
from core.approvals import RUNNING
from core.logs import get_logger
from core.queues import queue
from core.request import CommandRequest
from workers.context import JobContext, bind_logs
from workers.running import finish, load, post_with_seal, run_started

log = get_logger(__name__)
MAX_RESUMES = 2  # a request whose every run kills its worker is ended, not run forever


def request_died(job, connection: Redis, *exc_info) -> None:
    """RQ's callback for an execute_request job that failed, was stopped, or was abandoned: queue its recovery."""
    request_id = job.args[0] if job.args else ""
    why = type(exc_info[1]).__name__ if len(exc_info) > 1 else "stopped"
    log.warning("request's job ended abnormally", request=request_id, why=why)
    queue(connection).enqueue("workers.recovery.recover_request", request_id, why, job_id=f"recover-{request_id}-{job.id}",
                              result_ttl=30 * 24 * 3600)


def recover_request(request_id: str, why: str = "") -> dict:
    """Resume or end a running request whose job ended without ending it."""
    ctx, pending = load(request_id)
    if pending is None or pending.state != RUNNING:
        return {"ok": True, "state": pending.state if pending else None, "recovered": False}
    spec = ctx.spec
    attempts = ctx.connection.hincrby(f"irbot:recovery:{request_id}", "attempts", 1)
    ctx.connection.expire(f"irbot:recovery:{request_id}", 30 * 24 * 3600)
    if spec is not None and spec.recovery is Recovery.RESUME and attempts <= MAX_RESUMES:
        ctx.record("job.resumed", "running", why=why or "its worker died", attempt=attempts)
        return run_started(ctx, request_id, pending.approvers, resumed=True)
    done = _steps_so_far(ctx, request_id)
    note = (f"The worker running it died ({why or 'no heartbeat'}) and irbot did not run it again"
            f"{' after ' + str(attempts - 1) + ' resumes' if attempts > 1 else ''}: {len(done)} steps were done, listed above. "
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
    post_with_seal(ctx, *messages.failed(request, f"the worker running it stopped before it finished (request {request.id}); "
                                                  "nothing more will happen. Run the command again."))
    return {"ok": False}
