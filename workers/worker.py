"""The `irbot worker` process: RQ's worker, tuned so that a dead worker's job is noticed within about
half a minute (RQ's defaults take minutes), which starts its recovery (workers.recovery)."""

from __future__ import annotations

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
