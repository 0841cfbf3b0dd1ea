"""Faults on real parts: a worker and its work horse killed in the middle of a request, Redis killed and restarted."""

from __future__ import annotations

import re
import subprocess
import time

import boto3
import redis

from core.audit import AuditTrail
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER
from tests.processes import IRBOT
from tests.test_approval import wait_card, wait_thread


def group_names(instance_id: str) -> list[str]:
    instance = boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [g["GroupName"] for g in instance["SecurityGroups"]]


def wait_until(predicate, timeout: float = 60, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(every)
    raise AssertionError("timed out")


def test_a_worker_killed_while_the_interface_is_allow_all_is_noticed_and_the_isolation_finishes(start_irbot, world, slack, redis_url):
    irbot = start_irbot(IR_UNTRACK_PAUSE_SECONDS="60")  # a long pause: the kill lands inside it
    status, reply, _ = irbot.command(f"isolate {world['instance']}")
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    untrack, isolation = f"irbot-untrack-{world['vpc']}", f"irbot-isolation-{world['vpc']}"
    wait_until(lambda: group_names(world["instance"]) == [untrack])  # open to the world in both directions, for now

    irbot.kill("worker")  # the worker and its horse, mid-pause
    killed_at = time.monotonic()
    assert group_names(world["instance"]) == [untrack]
    irbot.start_again("worker")  # a fresh worker notices the dead one's job

    wait_card(slack, card["ts"], "Done", timeout=120)
    text = wait_thread(slack, card["ts"], "Audit records")  # the steps and the notes, in the card's thread
    assert "Resumed after the worker running it died" in text and "left by an interrupted run" in text
    assert time.monotonic() - killed_at < 90
    assert group_names(world["instance"]) == [isolation]
    ec2 = boto3.client("ec2")
    made = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [world["vpc"]]}, {"Name": "group-name", "Values": ["irbot-*"]}])
    assert sorted(g["GroupName"] for g in made["SecurityGroups"]) == [isolation, untrack]  # no duplicates
    trail = [r["action"] for r in AuditTrail(redis.Redis.from_url(redis_url)).records() if r["params"].get("request") == request_id]
    assert trail.count("job.resumed") == 1 and trail.count("job.finished") == 1
    verified = subprocess.run([IRBOT, "audit", "verify"], env=irbot.env, capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_redis_killed_and_restarted_with_its_append_only_file_loses_nothing_and_everyone_reconnects(moto_endpoint, slack, tmp_path, aws):
    """A real redis-server with AOF, SIGKILLed while a request waits for approval, then started again."""
    from tests.conftest import need_binary
    from tests.helpers import THIRD_RESPONDER, free_port, make_world
    from tests.processes import Irbot, irbot_environment

    binary, port = need_binary("redis-server"), free_port()
    url = f"redis://127.0.0.1:{port}/0"
    start = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", str(tmp_path)]
    server = subprocess.Popen(start, stdout=subprocess.DEVNULL)
    client = redis.Redis.from_url(url)
    wait_until(lambda: _pings(client))
    world = make_world()
    irbot = Irbot(irbot_environment(moto_endpoint, url, slack, IR_RESPONDERS=f"{RESPONDER},{SECOND_RESPONDER},{THIRD_RESPONDER}"), tmp_path)
    try:
        irbot.wait_until_ready()
        status, reply, _ = irbot.command(f"stop {world['instance']}")
        request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
        card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
        irbot.settle()  # the planning job has ended: the request waits for approval, and nothing else is under way
        records_before = len(AuditTrail(client).records())

        server.kill()  # SIGKILL: no shutdown, no final save
        server.wait(10)
        status, reply, elapsed = irbot.command(f"collect {world['instance']}")  # while Redis is down
        assert status == 200 and elapsed < 3 and "could not reach its job queue (Redis)" in reply["text"]
        server = subprocess.Popen(start, stdout=subprocess.DEVNULL)
        wait_until(lambda: _pings(client))
        assert AuditTrail(client).records()[records_before - 1]["action"] == "request.pending"  # nothing lost
        assert len(AuditTrail(client).records()) == records_before

        irbot.wait_until_ready()  # the bot and the worker found Redis again by themselves
        irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
        wait_card(slack, card["ts"], "Done", timeout=60)
        assert "running → stopping" in wait_thread(slack, card["ts"], "Audit records")
        verified = subprocess.run([IRBOT, "audit", "verify"], env=irbot.env, capture_output=True, text=True, timeout=60)
        assert verified.returncode == 0, verified.stdout
    finally:
        irbot.stop()
        server.kill()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False
