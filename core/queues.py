"""The queues irbot's jobs travel on, and the Redis connections to reach them."""

from __future__ import annotations

import json
from datetime import timedelta

from redis import Redis
from rq import Callback, Queue, Worker
from rq.serializers import JSONSerializer

import actions
from core.request import CommandRequest

# Long work (memory captures) has its own queue, so a long batch can't hold up a quick isolate.
# Each action declares its queue by these short names.
QUEUES = {"actions": "irbot-actions", "long": "irbot-memory"}
ACTIONS_QUEUE = QUEUES["actions"]
MEMORY_QUEUE = QUEUES["long"]
QUEUE_NAMES = tuple(QUEUES.values())

# JSON, not pickle: a job in Redis is data to read, never code to run.
SERIALIZER = JSONSerializer

# An idle worker tells Redis it is alive every ~15 s; a dead one's entry is gone within 30 s.
WORKER_TTL_SECONDS = 30


def connect(url: str, *, blocking: bool = False) -> Redis:
    """A Redis client. The bot's must fail fast (it has 3 s to ack); a worker's waits on BLPOP."""
    if blocking:
        return Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1.5)


def queues(connection: Redis) -> list[Queue]:
    return [Queue(name, connection=connection, serializer=SERIALIZER) for name in QUEUE_NAMES]


def queue(connection: Redis, name: str = "actions") -> Queue:
    return Queue(QUEUES[name], connection=connection, serializer=SERIALIZER)


def enqueue_gated(connection: Redis, request_id: str) -> str:
    """Queue the planning of a gated request (its dry run and approval card)."""
    return queue(connection).enqueue("workers.jobs.prepare_request", request_id, job_id=f"plan-{request_id}", result_ttl=7 * 24 * 3600).id


def enqueue_execution(connection: Redis, request_id: str) -> str:
    """Queue the execution of an approved request; the approval book lets only one run start."""
    # If its worker dies, RQ calls these when it notices; workers.recovery resumes or ends the request.
    died = Callback("workers.recovery.request_died")
    job = queue(connection).enqueue(
        "workers.jobs.execute_request", request_id, job_id=f"run-{request_id}", job_timeout=60 * 60, result_ttl=30 * 24 * 3600,
        on_failure=died, on_stopped=died,
    )
    return job.id


def enqueue(connection: Redis, request: CommandRequest) -> str:
    """Queue ``request`` for a worker; returns the job ID."""
    spec = actions.get(request.command)
    job = queue(connection, spec.queue if spec else "actions").enqueue(
        "workers.jobs.run_command",
        request.to_dict(),
        job_id=f"ir-{request.id}",
        job_timeout=spec.timeout_seconds if spec else 15 * 60,
        result_ttl=7 * 24 * 3600,
        failure_ttl=30 * 24 * 3600,
        description=f"/ir {request.command} {' '.join(request.targets)}".strip(),
        on_failure=Callback("workers.recovery.command_died"),
        on_stopped=Callback("workers.recovery.command_died"),
    )
    return job.id


def enqueue_incident_job(connection: Redis, job: str, data: dict, job_id: str) -> str:
    """Queue one of the incident jobs (declare_incident, close_incident, build_report)."""
    return queue(connection).enqueue(f"workers.incidents.{job}", data, job_id=job_id).id


def depths(connection: Redis) -> dict[str, int]:
    """How many jobs wait on each of irbot's queues (not those running, nor those scheduled for later)."""
    return {q.name: q.count for q in queues(connection)}


def live_workers(connection: Redis) -> int:
    """How many `irbot worker` processes have sent a heartbeat within WORKER_TTL_SECONDS."""
    return len(Worker.all(connection=connection))


# Requests whose requester was told no worker was running: the first worker to start tells their
# channels that work resumes (workers.catchup).
WAITING_FOR_A_WORKER = "irbot:waiting-for-a-worker"


def note_waiting_for_a_worker(connection: Redis, request: CommandRequest) -> None:
    connection.hset(WAITING_FOR_A_WORKER, request.id, json.dumps(request.to_dict()))


def schedule_outbox_delivery(connection: Redis, seconds: int = 5) -> None:
    """Have a worker try the Slack outbox again in ``seconds`` (one such job scheduled at a time)."""
    if connection.set("irbot:outbox:scheduled", 1, nx=True, ex=seconds + 30):
        queue(connection).enqueue_in(timedelta(seconds=seconds), "workers.delivery.deliver_outbox", result_ttl=600)


def enqueue_overview_refresh(connection: Redis, timeout_seconds: int) -> str:
    """Queue a count of the organization's instances for the Home tab (core.overview lets one run at a time)."""
    return queue(connection).enqueue("workers.home.refresh_overview", job_id="home-overview", job_timeout=timeout_seconds,
                                     result_ttl=600, failure_ttl=24 * 3600).id
