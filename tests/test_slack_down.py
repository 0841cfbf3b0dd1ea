"""Slack down: results wait in the outbox, and break glass runs the same rules from the command line."""

from __future__ import annotations

import os
import re
import subprocess
import time

import boto3
import pytest
import redis

from core.audit import AuditTrail
from tests.helpers import CHANNEL, OUTSIDER, RESPONDER, SECOND_RESPONDER
from tests.processes import IRBOT
from tests.test_approval import instance_state, wait_card
from tests.test_faults import wait_until


def test_a_slack_outage_during_a_collect_fails_nothing_and_every_digest_reaches_the_channel_once_slack_is_back(run_irbot, world, slack, redis_url):
    from rq.job import Job

    from core.queues import SERIALIZER

    irbot = run_irbot()
    slack.outage(20)  # chat.postMessage and chat.update answer 503 for 20 s
    started = time.monotonic()
    status, reply, _ = irbot.command(f"collect {world['instance']}")
    assert status == 200
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    connection = redis.Redis.from_url(redis_url)
    job = wait_until(lambda: (j := Job.fetch(f"ir-{request_id}", connection=connection, serializer=SERIALIZER)).get_status() in ("finished", "failed") and j)
    assert job.get_status() == "finished" and time.monotonic() - started < 20  # the job ended while Slack was down, and did not fail
    assert slack.calls_to("chat.postMessage:unavailable") and not slack.messages(CHANNEL)

    card = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if "Evidence from" in m["text"]), None), timeout=90)
    # The detail waited behind its message, and went in that message's thread once Slack gave the message its ts.
    [message] = slack.wait_for(lambda s: s.thread(CHANNEL, card["ts"]), timeout=90)
    s3 = boto3.client("s3")
    prefix = f"{CHANNEL}/123456789012/{world['instance']}/"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="ir-evidence", Prefix=prefix)["Contents"]]
    assert len(keys) >= 6
    for key in keys:
        digest = s3.head_object(Bucket="ir-evidence", Key=key)["Metadata"]["sha256"]
        assert f"sha256 {digest[:12]}…" in message["text"]
    assert sum("Evidence from" in m["text"] for m in slack.messages(CHANNEL)) == 1  # delivered once
    assert len(slack.messages(CHANNEL)) == 2 and slack.top_level(CHANNEL) == [card]
    assert connection.llen("irbot:outbox") == 0


def test_break_glass_runs_the_same_rules_from_the_command_line_while_slack_is_down(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    slack.outage(3600)  # Slack is down for the whole incident, until the end of this test

    def cli(*words: str, host: str | None = None) -> subprocess.CompletedProcess:
        # ``host``: typed on another machine (a UTS namespace with its own hostname), as a second responder would.
        wrap = ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"'] if host else []
        return subprocess.run([*wrap, IRBOT, *words], env=irbot.env, capture_output=True, text=True, timeout=120)

    asked = cli("run", f"stop {world['instance']}", "--as", RESPONDER, "--reason", "Slack is down", "--channel", CHANNEL)
    assert asked.returncode == 0, asked.stderr
    request_id = asked.stdout.splitlines()[0]
    assert re.fullmatch(r"[0-9a-f]{12}", request_id) and f"irbot approve {request_id}" in asked.stdout
    wait_until(lambda: AuditTrail(redis.Redis.from_url(redis_url)).records() and
               any(r["action"] == "request.pending" for r in AuditTrail(redis.Redis.from_url(redis_url)).records()))
    assert request_id in cli("requests").stdout

    same_account = cli("approve", request_id, "--as", SECOND_RESPONDER, "--reason", "hurry")  # another Slack ID, typed by the same account
    assert same_account.returncode == 1 and "asked for from this same account on this host" in same_account.stderr
    if os.geteuid() != 0:
        pytest.skip("typing on another host is a UTS namespace here, which needs root (CI runs as root)")
    mine = cli("approve", request_id, "--as", RESPONDER, "--reason", "hurry", host="responder-laptop-2")  # still the two-person rule
    assert mine.returncode == 1 and "You asked for this, so you can't approve it" in mine.stderr
    stranger = cli("approve", request_id, "--as", OUTSIDER, "--reason", "hurry", host="responder-laptop-2")
    assert stranger.returncode == 1 and "Only irbot's approvers" in stranger.stderr
    assert instance_state(world["instance"]) == "running"

    approved = cli("approve", request_id, "--as", SECOND_RESPONDER, "--reason", "Slack is down; stop the miner", host="responder-laptop-2")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert f"Request {request_id} finished" in approved.stdout and "running → stopping" in approved.stdout
    assert instance_state(world["instance"]) in ("stopping", "stopped")
    trail = [r for r in AuditTrail(redis.Redis.from_url(redis_url)).records() if r["params"].get("request") == request_id]
    assert all(r["params"]["break_glass"]["reason"] == "Slack is down" and r["params"]["break_glass"]["host"] for r in trail)
    assert next(r for r in trail if r["action"] == "request.approved")["params"]["approved_from"]["reason"] == "Slack is down; stop the miner"
    assert not slack.messages(CHANNEL)  # nothing reached Slack yet: it waits in the outbox

    slack.outage(0)  # Slack answers again: the channel gets the story
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "")), None), timeout=60)
    wait_card(slack, card["ts"], "Done", timeout=60)
