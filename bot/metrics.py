"""GET /metrics: irbot's numbers in Prometheus's text format, all read from Redis at scrape time.

Read at scrape time, not kept in serve's memory, because most of them are not serve's: the queues
and the approval book live in Redis, and jobs, with their Slack and AWS retries, run in worker
processes (core.metrics says how their counts reach Redis). Nothing here carries a secret or
anything a user typed: labels are command names from the grammar, queue names, job functions,
AWS service names and fixed reasons.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis import Redis

from core import metrics
from core.approvals import waiting_for_approval
from core.queues import depths

# The classic text format every Prometheus reads; irbot's names and labels need nothing newer.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every counter irbot keeps (its name in core.metrics, without Prometheus's _total), its meaning and labels.
# A total stored under any other name or label is not shown.
COUNTERS = {
    "irbot_requests": ("/ir commands and finding-card requests, by command and what irbot did with them "
                       "(queued, awaiting_approval, answered, refused, error)", ("command", "outcome")),
    "irbot_slack_retries": ("Slack Web API calls tried again, by reason (rate_limited, server_error, connection_error)", ("reason",)),
    "irbot_aws_retries": ("AWS API calls tried again by botocore's retry mode (throttling, 5xx, timeouts), by service", ("service",)),
}


class IrbotCollector:
    def __init__(self, connection: Redis):
        self.connection = connection

    def collect(self):
        metrics.flush(self.connection)  # this process's latest counts, so a scrape right after a request shows it
        totals = metrics.counts(self.connection)
        for name, (meaning, labels) in COUNTERS.items():
            family = CounterMetricFamily(name, meaning, labels=labels)
            for values, total in sorted(totals.get(name, []), key=lambda t: sorted(t[0].items())):
                if set(values) == set(labels):
                    family.add_metric([values[label] for label in labels], total)
            yield family
        waiting = GaugeMetricFamily("irbot_approvals_waiting", "requests whose plan is shown and which wait for an approval, window still open")
        waiting.add_metric([], waiting_for_approval(self.connection))
        yield waiting
        depth = GaugeMetricFamily("irbot_queue_depth", "jobs waiting on each RQ queue for a worker", labels=["queue"])
        for name, count in depths(self.connection).items():
            depth.add_metric([name], count)
        yield depth
        durations = HistogramMetricFamily("irbot_job_duration_seconds", "how long each worker job ran, by job function and RQ's outcome "
                                          "(finished, failed); a job whose work horse was killed is not counted", labels=["job", "outcome"])
        for (job, outcome), entry in sorted(metrics.job_durations(self.connection).items()):
            durations.add_metric([job, outcome], entry["buckets"], entry["sum"])
        yield durations


def page(connection: Redis) -> tuple[bytes, str]:
    """The scrape's body and content type. A RedisError goes up: without Redis there is nothing to show."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IrbotCollector(connection))
    return generate_latest(registry), CONTENT_TYPE
