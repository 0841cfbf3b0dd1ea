"""GET /metrics on a real `irbot serve`, with a real `irbot worker`, Redis, moto (behind the throttling proxy)
and the fake Slack: what the numbers say after a responder's morning."""

from __future__ import annotations

import time
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from standins.aws_proxy import AwsProxy
from tests.conftest import AWS_ENV
from tests.helpers import BOT_TOKEN, CHANNEL, OUTSIDER, RESPONDER, SIGNING_SECRET, make_world
from tests.processes import Irbot, irbot_environment

METRICS_DB = 7  # a Redis database of this module's own: the totals are absolute, and outlive processes


@pytest.fixture(scope="module")
def ec2_proxy(moto_endpoint):
    proxy = AwsProxy(moto_endpoint).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def slack(module_slack):
    return module_slack


@pytest.fixture(scope="module")
def irbot(moto_endpoint, redis_url, ec2_proxy, slack, tmp_path_factory):
    url = redis_url.rsplit("/", 1)[0] + f"/{METRICS_DB}"
    redis.Redis.from_url(url).flushdb()
    # Only EC2 goes through the proxy; S3 (the evidence) talks to moto directly.
    env = irbot_environment(moto_endpoint, url, slack, AWS_ENDPOINT_URL_EC2=ec2_proxy.url)
    processes = Irbot(env, tmp_path_factory.mktemp("irbot-metrics-logs"))
    try:
        processes.wait_until_ready()
        yield processes
    finally:
        processes.stop()


@pytest.fixture
def world(irbot, moto_endpoint, monkeypatch):
    urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")).read()
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    return make_world()


class Scrape:
    """One GET /metrics, parsed as Prometheus parses it."""

    def __init__(self, url: str):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            self.text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}

    def value(self, sample: str, **labels: str) -> float | None:
        family = self.families[sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")]
        found = [s.value for s in family.samples if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) <= 1, f"{sample} {labels} matches {len(found)} series"
        return found[0] if found else None

    def labels(self, family: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.families[family].samples}


def scrape_until(irbot, predicate, timeout: float = 30) -> Scrape:
    """Scrape until ``predicate`` holds: a work horse stores its numbers as its job ends, a moment after the channel hears."""
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape(irbot.url)
        if predicate(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.2)


def test_metrics_count_requests_retries_jobs_approvals_and_queued_work_across_processes(irbot, world, slack, ec2_proxy):
    instance = world["instance"]
    first = Scrape(irbot.url)
    assert first.value("irbot_requests_total", command="collect") is None
    assert first.value("irbot_approvals_waiting") == 0
    assert first.value("irbot_queue_depth", queue="irbot-actions") == 0 and first.value("irbot_queue_depth", queue="irbot-memory") == 0

    # Refused: not a responder, a malformed ID, junk. Junk is "unknown": no label value is ever what was typed.
    assert "not on irbot's responder list" in irbot.command(f"collect {instance}", user=OUTSIDER)[1]["text"]
    irbot.command("collect i-12345")
    irbot.command("<!channel> rm -rf /")
    # Queued: a collect whose first DescribeInstances is throttled twice, and whose first post Slack rate-limits.
    ec2_proxy.refuse("DescribeInstances", "RequestLimitExceeded", 503, times=2)
    slack.rate_limit("chat.postMessage", 1)
    status, reply, _ = irbot.command(f"collect {instance}")
    assert status == 200 and reply["response_type"] == "ephemeral" and "Queued" in reply["text"]

    scrape = Scrape(irbot.url)  # serve's own counts are stored before it answers: no waiting for a flush
    assert scrape.value("irbot_requests_total", command="collect", outcome="refused") == 2
    assert scrape.value("irbot_requests_total", command="unknown", outcome="refused") == 1
    assert scrape.value("irbot_requests_total", command="collect", outcome="queued") == 1

    slack.wait_for(lambda s: s.messages(CHANNEL), timeout=60)
    irbot.settle()
    # The retries and the job ran in the worker's work horse, a process serve never sees.
    scrape = scrape_until(irbot, lambda s: s.value("irbot_job_duration_seconds_count", job="run_command", outcome="finished"))
    assert scrape.value("irbot_job_duration_seconds_count", job="run_command", outcome="finished") == 1
    seconds = scrape.value("irbot_job_duration_seconds_sum", job="run_command", outcome="finished")
    assert 1 <= seconds < 60  # Slack's Retry-After alone kept it a second
    assert scrape.value("irbot_job_duration_seconds_bucket", job="run_command", outcome="finished", le="0.5") == 0
    assert scrape.value("irbot_job_duration_seconds_bucket", job="run_command", outcome="finished", le="+Inf") == 1
    assert scrape.value("irbot_slack_retries_total", reason="rate_limited") == 1
    assert scrape.value("irbot_aws_retries_total", service="ec2") == 2

    # Gated: isolate waits for a second person once its plan is shown.
    status, reply, _ = irbot.command(f"isolate {instance}")
    assert status == 200
    scrape = scrape_until(irbot, lambda s: s.value("irbot_approvals_waiting") == 1)
    assert scrape.value("irbot_approvals_waiting") == 1
    assert scrape.value("irbot_requests_total", command="isolate", outcome="awaiting_approval") == 1
    irbot.settle()
    scrape = scrape_until(irbot, lambda s: s.value("irbot_job_duration_seconds_count", job="prepare_request", outcome="finished"))
    assert scrape.value("irbot_job_duration_seconds_count", job="prepare_request", outcome="finished") == 1

    # With the worker stopped, the next collect waits on the queue, and the depth says so.
    irbot.kill("worker")
    # Until Redis has seen the killed worker's connection close, its blocking dequeue would still take the job.
    connection = redis.Redis.from_url(irbot.env["REDIS_URL"])
    deadline = time.monotonic() + 10
    while connection.info("clients")["blocked_clients"] and time.monotonic() < deadline:
        time.sleep(0.05)
    irbot.command(f"collect {instance}")
    scrape = Scrape(irbot.url)
    assert scrape.value("irbot_queue_depth", queue="irbot-actions") == 1
    assert scrape.value("irbot_queue_depth", queue="irbot-memory") == 0
    assert scrape.value("irbot_requests_total", command="collect", outcome="queued") == 2
    assert scrape.value("irbot_approvals_waiting") == 1  # read from Redis: the worker's going changed nothing

    assert scrape.labels("irbot_requests", "command") == {"collect", "isolate", "unknown"}
    for secret_or_input in (BOT_TOKEN, SIGNING_SECRET, AWS_ENV["AWS_SECRET_ACCESS_KEY"], instance, RESPONDER, OUTSIDER, "<!channel>", "rm -rf"):
        assert secret_or_input not in scrape.text


def test_metrics_are_503_saying_so_when_redis_is_unreachable():
    from bot.web import health_app
    from core.queues import connect

    answers = []
    body = health_app(connect("redis://127.0.0.1:9/0"))({"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"},
                                                         lambda status, headers: answers.append(status))
    assert answers[0].startswith("503") and b"can't reach Redis" in b"".join(body)
