"""Black-box: `irbot serve` (HTTP) and `irbot worker` as subprocesses, driven by Slack-signed requests."""

from __future__ import annotations

import hashlib
import json
import re
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import redis

from standins.fake_slack import FakeSlack
from tests.conftest import AWS_ENV
from tests.processes import IRBOT, Irbot, irbot_environment
from tests.helpers import (
    BOT_TOKEN,
    CHANNEL,
    OUTSIDER,
    RESPONDER,
    SECOND_RESPONDER,
    SIGNING_SECRET,
    evidence_keys,
    free_port,
    make_world,
    signed_headers,
    slash_command,
)

@pytest.fixture(scope="module")
def irbot(moto_endpoint, redis_url, module_slack, tmp_path_factory):
    processes = Irbot(irbot_environment(moto_endpoint, redis_url, module_slack), tmp_path_factory.mktemp("irbot-logs"))
    try:
        processes.wait_until_ready()
        yield processes
    finally:
        processes.stop()


@pytest.fixture
def world(irbot, module_slack, moto_endpoint, monkeypatch):
    urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")).read()
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    module_slack.reset()
    return make_world()


def job_count(redis_url: str) -> int:
    return sum(1 for _ in redis.Redis.from_url(redis_url).scan_iter("rq:job:*"))


def test_healthz_answers_200_while_redis_and_a_worker_are_up(irbot):
    with urllib.request.urlopen(irbot.url + "/healthz") as response:
        assert response.status == 200
        assert json.loads(response.read()) == {"status": "ok", "redis": "ok", "workers": 1}


def test_healthz_is_503_naming_what_is_missing_without_redis_or_without_a_worker(redis_conn):
    from bot.web import health_app
    from core.queues import connect

    def ask(connection) -> tuple[str, dict]:
        answers = []
        body = health_app(connection)({"PATH_INFO": "/healthz", "REQUEST_METHOD": "GET"}, lambda status, headers: answers.append(status))
        return answers[0], json.loads(b"".join(body))

    status, answer = ask(connect("redis://127.0.0.1:9/0"))  # nothing listens there
    assert status.startswith("503") and answer["redis"] == "unreachable" and "Redis" in answer["why"]
    status, answer = ask(redis_conn)  # Redis is up, but no worker has registered in it
    assert status.startswith("503") and answer["workers"] == 0 and "no irbot worker has sent a heartbeat" in answer["why"]


def test_collect_is_acked_within_3_seconds_and_its_evidence_reaches_bucket_and_channel(irbot, world, module_slack):
    instance = world["instance"]
    response_url = module_slack.response_url("collect")
    status, reply, elapsed = irbot.command(f"collect {instance}", response_url=response_url)

    assert status == 200 and elapsed < 3
    # The asker alone sees the ack; the channel gets one message, the outcome, with the objects in its thread.
    assert reply["response_type"] == "ephemeral"
    assert f"Queued `/ir collect {instance}` as request" in reply["text"]

    [card] = module_slack.wait_for(lambda s: s.top_level(CHANNEL), timeout=60)
    [message] = module_slack.wait_for(lambda s: s.thread(CHANNEL, card["ts"]), timeout=60)
    assert "8 objects" in card["text"] and "sha256" not in card["text"]
    keys = evidence_keys()
    assert len(keys) == 8 and all(k.startswith(f"{CHANNEL}/123456789012/{instance}/") for k in keys)
    s3 = boto3.client("s3")
    for key in keys:
        obj = s3.get_object(Bucket="ir-evidence", Key=key)
        digest = hashlib.sha256(obj["Body"].read()).hexdigest()
        assert obj["Metadata"]["sha256"] == digest
        assert obj["ObjectLockMode"] == "COMPLIANCE"
        name = key.rsplit("/", 1)[-1]
        assert f"• {name} — " in message["text"] and f"sha256 {digest[:12]}… — " in message["text"] and digest not in message["text"]
    # Console output and user data often hold secrets: their links live an hour, not half a day.
    lifetimes = re.findall(r"X-Amz-Expires=(\d+)", json.dumps(message))
    assert lifetimes and set(lifetimes) == {"3600"}


@pytest.mark.parametrize(
    "headers_for",
    [
        pytest.param(lambda body: signed_headers(body, secret="not-the-signing-secret"), id="wrong-secret"),
        pytest.param(lambda body: signed_headers(body, timestamp=int(time.time()) - 600), id="stale-timestamp"),
        pytest.param(lambda body: {"Content-Type": "application/x-www-form-urlencoded"}, id="unsigned"),
    ],
)
def test_badly_signed_requests_are_refused_and_queue_nothing(irbot, world, redis_url, module_slack, headers_for):
    before = job_count(redis_url)
    body = slash_command(f"collect {world['instance']}")
    status, _, _ = irbot.post(body, headers_for(body))
    assert status == 401
    assert job_count(redis_url) == before
    irbot.settle()
    assert module_slack.messages(CHANNEL) == []


def test_a_non_responder_is_refused_and_nothing_is_queued(irbot, world, redis_url, module_slack):
    before = job_count(redis_url)
    status, reply, _ = irbot.command(f"collect {world['instance']}", user=OUTSIDER)
    assert status == 200
    assert reply["response_type"] == "ephemeral"
    assert "not on irbot's responder list" in reply["text"]
    assert job_count(redis_url) == before


@pytest.mark.parametrize(
    "text, expected",
    [
        ("colect i-0123456789abcdef0", "`colect` is not an /ir command. Did you mean `/ir collect`?"),
        ("collect i-12345", "`i-12345` is not an EC2 instance ID"),
        ("collect i-0123456789abcdef0 --region moon-1", "`moon-1` is not an AWS region."),
        ("A" * 10240, "That command is 10240 characters long"),
        ("collect ｉ-０１２３ 🔥", "is not an EC2 instance ID"),
        ("collect <!channel>", "`&lt;!channel&gt;` is not an EC2 instance ID"),
    ],
    ids=["unknown-subcommand", "malformed-id", "unknown-region", "10KB-junk", "unicode", "mention"],
)
def test_bad_input_gets_an_ephemeral_sentence_and_changes_nothing(irbot, world, redis_url, text, expected):
    before = job_count(redis_url)
    status, reply, elapsed = irbot.command(text)
    assert status == 200 and elapsed < 3
    assert reply["response_type"] == "ephemeral"
    assert expected in reply["text"]
    assert "Traceback" not in reply["text"]
    assert job_count(redis_url) == before
    assert evidence_keys() == []


def test_help_lists_the_whole_grammar(irbot):
    status, reply, _ = irbot.command("help")
    assert status == 200
    for usage in ("/ir collect <instance-id>", "/ir isolate <instance-id>", "/ir memory <target>...", "/ir hunt-key <access-key-id>", "/ir audit", "--region R"):
        assert usage in reply["text"]


def test_every_command_of_the_grammar_is_available(irbot):
    status, reply, _ = irbot.command("help")
    assert status == 200 and "not available yet" not in reply["text"]


def test_a_missing_instance_is_reported_in_the_channel_as_a_sentence(irbot, world, module_slack):
    irbot.command("collect i-0123456789abcdef0")
    # This request's message (a late one of an earlier test in this module may land in the channel too).
    message = module_slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "i-0123456789abcdef0" in m["text"]), None), timeout=60)
    assert "Instance i-0123456789abcdef0 was not found in us-east-1" in message["text"]
    assert "Traceback" not in message["text"]


def test_logs_are_json_with_request_and_job_ids_and_never_hold_secrets(irbot, world, module_slack):
    irbot.command(f"collect {world['instance']}")
    module_slack.wait_for(lambda s: s.messages(CHANNEL), timeout=60)
    irbot.settle()
    text = irbot.log_text()
    for secret in (BOT_TOKEN, SIGNING_SECRET, AWS_ENV["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in text
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    finished = [r for r in records if r.get("event") == "job finished"]
    assert finished and finished[-1]["request_id"] and finished[-1]["job_id"].startswith("ir-")
    queued = [r for r in records if r.get("event") == "queued"]
    assert queued and queued[-1]["request_id"] == finished[-1]["request_id"]


def test_serve_uses_socket_mode_when_an_app_token_is_set(redis_url, tmp_path):
    app_token = "xapp-1-A0IRBOT-123456-abcdefabcdef"
    fake = FakeSlack(BOT_TOKEN, app_token=app_token).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_"))}
    env.update({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": app_token, "SLACK_API_URL": fake.api_url,
                "REDIS_URL": redis_url, "IR_EVIDENCE_BUCKET": "ir-evidence", "IR_RESPONDERS": RESPONDER, "IR_APPROVERS": SECOND_RESPONDER, "PYTHONUNBUFFERED": "1",
                "PORT": str(free_port())})
    log = tmp_path / "serve.log"
    process = subprocess.Popen([IRBOT, "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        fake.wait_for(lambda s: s.calls_to("apps.connections.open"), timeout=30)
        assert process.poll() is None
        # Health is served on $PORT in Socket Mode too; with no worker running it says so.
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{env['PORT']}/healthz", timeout=5)
                raise AssertionError("healthz answered 200 with no worker")
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and json.loads(exc.read())["workers"] == 0
                break
            except urllib.error.URLError:  # not listening yet
                assert time.monotonic() < deadline, "nothing answered /healthz on $PORT in Socket Mode"
                time.sleep(0.2)
        # And Prometheus scrapes /metrics there (tests/test_metrics.py checks the numbers).
        with urllib.request.urlopen(f"http://127.0.0.1:{env['PORT']}/metrics", timeout=5) as response:
            from prometheus_client.parser import text_string_to_metric_families

            families = {f.name for f in text_string_to_metric_families(response.read().decode())}
        assert {"irbot_requests", "irbot_queue_depth", "irbot_approvals_waiting", "irbot_job_duration_seconds"} <= families
    finally:
        process.terminate()
        process.wait(15)
        fake.stop()
    assert app_token not in log.read_text() and BOT_TOKEN not in log.read_text()
    assert '"mode": "socket"' in log.read_text()


def _status_of_raw_post(url: str, head: bytes, body_chunks) -> bytes:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may close the connection once it has refused the body
        return sock.recv(200).split(b"\r\n", 1)[0]


def _rss_kib(pid: int) -> int:
    return int(next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS")).split()[1])


def test_oversized_bodies_are_refused_with_413_before_anything_reads_them(irbot):
    """A 400 MiB POST with a bogus signature once took `irbot serve` to 2 GiB before its 401."""
    pid = irbot.processes["serve"].pid
    before = _rss_kib(pid)
    declared = (f"POST /slack/events HTTP/1.1\r\nHost: irbot\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                f"X-Slack-Signature: v0=bogus\r\nX-Slack-Request-Timestamp: 1\r\nContent-Length: {400 << 20}\r\n\r\n").encode()
    assert _status_of_raw_post(irbot.url, declared, (b"a" * (1 << 20) for _ in range(4))) == b"HTTP/1.1 413 Request Entity Too Large"
    chunked = b"POST /slack/events HTTP/1.1\r\nHost: irbot\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunks = (b"%x\r\n%s\r\n" % (1 << 20, b"b" * (1 << 20)) for _ in range(8))
    assert b"413" in _status_of_raw_post(irbot.url, chunked, chunks)
    assert _rss_kib(pid) - before < 32 << 10  # nothing was buffered whole
    status, reply, _ = irbot.command("help")  # and it still serves Slack
    assert status == 200 and "Commands" in reply["text"]
