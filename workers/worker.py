"""The `irbot worker` process: RQ's worker, tuned so that a dead worker's job is noticed within about
half a minute (RQ's defaults take minutes), which starts its recovery (workers.recovery)."""

from __future__ import annotations

import itertools
import time

from redis.exceptions import RedisError
from rq import Worker
from rq.exceptions import AbandonedJobError

from core import metrics
from core.queues import SERIALIZER, WORKER_TTL_SECONDS, queues
from workers.catchup import catch_up

JOB_HEARTBEAT_SECONDS = 5  # how often a running job's worker says it is alive
HEARTBEAT_GRACE_SECONDS = 15  # how long past a missed heartbeat a job counts as abandoned (RQ: 60)
MAINTENANCE_SECONDS = 15  # how often a worker looks for abandoned jobs (RQ: 600)


class IrbotWorker(Worker):
    def maintain_heartbeats(self, job) -> None:
        # A Redis blip while a job runs must not end the worker's loop and orphan its work horse:
        # the beats resume once Redis answers.
        try:
            super().maintain_heartbeats(job)
        except RedisError as exc:
            self.log.error("heartbeat not sent: %s", type(exc).__name__)

    def perform_job(self, job, queue) -> bool:
        # Runs in the work horse, which exits as soon as this returns: the job's duration and whatever the
        # horse counted (Slack and AWS retries) go to Redis now, or never (core.metrics).
        started, finished = time.monotonic(), False
        try:
            finished = super().perform_job(job, queue)
            return finished
        finally:
            try:
                metrics.observe_job(self.connection, job.func_name, "finished" if finished else "failed", time.monotonic() - started)
                metrics.flush(self.connection)
            except Exception as exc:  # noqa: BLE001 - a job's outcome never depends on its metrics
                self.log.error("metrics not stored: %s", type(exc).__name__)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage) -> None:
        # RQ calls no callback when only the horse dies (the OOM killer): call the job's own, so its request ends.
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        try:
            job.execute_failure_callback(self.death_penalty_class, AbandonedJobError, AbandonedJobError(), None)
        except Exception as exc:  # noqa: BLE001 - the worker goes on whatever the callback did
            self.log.error("failure callback of a killed horse failed: %s", type(exc).__name__)

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
    for generation in itertools.count():
        # A new name each time: RQ refuses a name whose registration has not expired yet.
        worker = make_worker(connection, name if generation == 0 else f"{name}-{generation}")
        catch_up(connection)  # before anything else: what went overdue while no worker ran
        try:
            worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
        except (RedisError, ValueError) as exc:
            log.error("worker loop failed", error=type(exc).__name__)
        # SIGTERM/SIGINT (a deploy, Ctrl-C), not a lost connection: RQ sets _stop_requested when it stops after a
        # job, and only the shutdown date when it stops idle (it raises StopRequested then).
        if burst or getattr(worker, "_stop_requested", False) or getattr(worker, "_shutdown_requested_date", None):
            return
        log.warning("worker loop ended; starting again once Redis answers")
        while True:
            try:
                connection.ping()
                break
            except RedisError:
                time.sleep(1)
