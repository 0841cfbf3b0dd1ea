"""irbot's counters and job durations, kept in Redis so that one scrape of `irbot serve` sees every process.

Most of what is worth counting happens outside serve: jobs run in RQ work horses (forked, one per
job, gone when it ends), and they make most of the Slack and AWS calls, and so most retries. A
counter in serve's memory would miss all that, and a horse's memory dies with it. So each process
counts in memory (actions.tally) and adds its counts to one Redis hash: a work horse when its job
ends, just before it exits (with the job's duration); serve, worker and findings every few seconds;
serve also right before it answers a scrape. Serve reads the hash at scrape time. The totals are
the whole deployment's: scrape one serve (several replicas all show the same numbers).

A total only grows, and outlives any process; it starts from zero only if Redis loses it, which
Prometheus reads as a counter reset.
"""

from __future__ import annotations

import json
import math
import threading
import time

from redis import Redis
from redis.exceptions import RedisError

from actions import tally
from core.logs import get_logger

log = get_logger(__name__)

COUNTS = "irbot:metrics:counts"  # field: JSON [name, {label: value}] → total
JOB_DURATIONS = "irbot:metrics:job-durations"  # field: JSON [job, outcome, bucket | "sum" | "count"] → value
# Seconds. Jobs range from a plan (under a second) through a collect (seconds) and a hunt across an
# organization (a minute or more) to a memory capture (up to the hour a job may run).
JOB_DURATION_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)
FLUSH_SECONDS = 5.0


def flush(connection: Redis) -> None:
    """Add this process's counts since the last flush to the shared totals. All or nothing: if Redis
    can't take them, they stay in memory for the next flush, and the RedisError goes up."""
    taken = tally.take()
    if not taken:
        return
    try:
        with connection.pipeline(transaction=True) as pipe:
            for (name, labels), amount in taken.items():
                pipe.hincrbyfloat(COUNTS, json.dumps([name, dict(labels)], sort_keys=True), amount)
            pipe.execute()
    except RedisError:
        tally.give_back(taken)
        raise


def counts(connection: Redis) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every shared total: name → [(labels, total)]."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for field, value in connection.hgetall(COUNTS).items():
        name, labels = json.loads(field)
        found.setdefault(name, []).append((labels, float(value)))
    return found


def job_label(func_name: str) -> str:
    """The job's function (run_command, prepare_request…): a closed set, as every job is one of irbot's own."""
    module, _, function = func_name.rpartition(".")
    return function if module.startswith("workers") and function.isidentifier() else "other"


def observe_job(connection: Redis, func_name: str, outcome: str, seconds: float) -> None:
    """Record one finished job's duration, as the cumulative buckets Prometheus's histograms are made of."""
    job = job_label(func_name)
    with connection.pipeline(transaction=True) as pipe:
        for bound in JOB_DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrbyfloat(JOB_DURATIONS, json.dumps([job, outcome, _bound_text(bound)]), 1)
        pipe.hincrbyfloat(JOB_DURATIONS, json.dumps([job, outcome, "sum"]), seconds)
        pipe.hincrbyfloat(JOB_DURATIONS, json.dumps([job, outcome, "count"]), 1)
        pipe.execute()


def job_durations(connection: Redis) -> dict[tuple[str, str], dict]:
    """(job, outcome) → {"buckets": [(upper bound, cumulative count)], "sum": seconds}, every bound present."""
    found: dict[tuple[str, str], dict] = {}
    for field, value in connection.hgetall(JOB_DURATIONS).items():
        job, outcome, part = json.loads(field)
        found.setdefault((job, outcome), {"values": {}})["values"][part] = float(value)
    for entry in found.values():
        values = entry.pop("values")
        entry["buckets"] = [(_bound_text(b), values.get(_bound_text(b), 0.0)) for b in JOB_DURATION_BUCKETS]
        entry["sum"] = values.get("sum", 0.0)
    return found


def _bound_text(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def keep_flushing(connection: Redis, every: float = FLUSH_SECONDS) -> None:
    """Flush every ``every`` seconds, on a daemon thread, for as long as the process lives."""

    def loop() -> None:
        while True:
            time.sleep(every)
            try:
                flush(connection)
            except RedisError as exc:
                log.warning("metrics not stored yet", error=type(exc).__name__)

    threading.Thread(target=loop, daemon=True, name="metrics-flush").start()
