"""The queues irbot's jobs travel on, and the Redis connections to reach them."""

from __future__ import annotations

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from workers.request import CommandRequest

# Memory captures have their own queue, so a long batch can't hold up a quick isolate.
ACTIONS_QUEUE = "irbot-actions"
MEMORY_QUEUE = "irbot-memory"
QUEUE_NAMES = (ACTIONS_QUEUE, MEMORY_QUEUE)

# JSON, not pickle: a job in Redis is data to read, never code to run.
SERIALIZER = JSONSerializer

JOB_TIMEOUT_SECONDS = {"collect": 15 * 60}


def connect(url: str, *, blocking: bool = False) -> Redis:
    """A Redis client. The bot's must fail fast (it has 3 s to ack); a worker's waits on BLPOP."""
    if blocking:
        return Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1.5)


def queues(connection: Redis) -> list[Queue]:
    return [Queue(name, connection=connection, serializer=SERIALIZER) for name in QUEUE_NAMES]


def queue(connection: Redis) -> Queue:
    return Queue(ACTIONS_QUEUE, connection=connection, serializer=SERIALIZER)


def enqueue_gated(connection: Redis, request_id: str) -> str:
    """Queue the planning of a gated request (its dry run and approval card)."""
    return queue(connection).enqueue("workers.jobs.prepare_request", request_id, job_id=f"plan-{request_id}", result_ttl=7 * 24 * 3600).id


def enqueue_execution(connection: Redis, request_id: str) -> str:
    """Queue the execution of an approved request; the approval book lets only one run start."""
    job = queue(connection).enqueue(
        "workers.jobs.execute_request", request_id, job_id=f"run-{request_id}", job_timeout=60 * 60, result_ttl=30 * 24 * 3600
    )
    return job.id


def enqueue(connection: Redis, request: CommandRequest) -> str:
    """Queue ``request`` for a worker; returns the job ID."""
    queue = Queue(ACTIONS_QUEUE, connection=connection, serializer=SERIALIZER)
    job = queue.enqueue(
        "workers.jobs.run_command",
        request.to_dict(),
        job_id=f"ir-{request.id}",
        job_timeout=JOB_TIMEOUT_SECONDS.get(request.command, 15 * 60),
        result_ttl=7 * 24 * 3600,
        failure_ttl=30 * 24 * 3600,
        description=f"/ir {request.command} {' '.join(request.targets)}".strip(),
    )
    return job.id
