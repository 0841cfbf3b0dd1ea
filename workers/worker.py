"""The `irbot worker` process: RQ's worker, tuned so that a dead worker's job is noticed within about
half a minute (RQ's defaults take minutes), which starts its recovery (workers.recovery)."""

from __future__ import annotations

import time

from redis.exceptions import RedisError
from rq import Worker

from core.queues import SERIALIZER, WORKER_TTL_SECONDS, queues

JOB_HEARTBEAT_SECONDS = 5  # how often a running job's worker says it is alive
HEARTBEAT_GRACE_SECONDS = 15  # how long past a missed heartbeat a job counts as abandoned (RQ: 60)
MAINTENANCE_SECONDS = 15  # how often a worker looks for abandoned jobs (RQ: 600)


class IrbotWorker(Worker):
    def get_heartbeat_ttl(self, job) -> int:
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            interval = min(job.timeout - self.current_job_working_time, interval)
        return int(interval) + HEARTBEAT_GRACE_SECONDS


def make_worker(connection, name: str) -> IrbotWorker:
    return IrbotWorker(queues(connection), connection=connection, serializer=SERIALIZER, name=name, worker_ttl=WORKER_TTL_SECONDS,
                       job_monitoring_interval=JOB_HEARTBEAT_SECONDS, maintenance_interval=MAINTENANCE_SECONDS)


def work(connection, name: str, *, burst: bool, logging_level: str, log) -> None:
    """Run a worker until asked to stop. RQ quits its loop on some Redis errors (a restart of Redis, say):
    start it again once Redis answers, instead of leaving the queues without a worker."""
    while True:
        worker = make_worker(connection, name)
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except RedisError as exc:
            log.error("worker lost Redis", error=type(exc).__name__)
        # RQ's own stop flag: set by SIGTERM/SIGINT (a deploy, Ctrl-C), not by a lost connection.
        if burst or getattr(worker, "_stop_requested", False):
            return
        log.warning("worker loop ended; starting again once Redis answers")
        while True:
            try:
                connection.ping()
                break
            except RedisError:
                time.sleep(1)
