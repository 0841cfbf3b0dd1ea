"""AWS throttling on real parts: `irbot serve` and `irbot worker` reach moto through a proxy that
refuses calls the way AWS does when an account is over its request rate (standins/aws_proxy.py)."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone

import boto3
import pytest

from standins.aws_proxy import AwsProxy
from tests.helpers import CHANNEL, SECOND_RESPONDER, amazon_image, evidence_keys, make_containment_world, make_world
from tests.processes import IRBOT
from tests.test_approval import audit_of, wait_card, wait_thread
from tests.test_faults import group_names


@pytest.fixture
def proxy(aws):
    running = AwsProxy(aws).start()
    yield running
    running.stop()


def request_of(reply: dict) -> str:
    return re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)


def test_isolate_collect_and_hunt_key_all_finish_through_a_minute_of_throttling(start_irbot, proxy, slack, redis_conn, redis_url):
    world = make_containment_world()
    leaked = world["keys"][0]
    attacker = boto3.Session(aws_access_key_id=leaked["AccessKeyId"], aws_secret_access_key=leaked["SecretAccessKey"])
    ec2 = attacker.client("ec2", region_name="eu-west-1")
    launched = ec2.run_instances(ImageId=amazon_image(ec2), InstanceType="c5.9xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    irbot = start_irbot(AWS_ENDPOINT_URL=proxy.url, IR_UNTRACK_PAUSE_SECONDS="1")
    irbot.add_workers(2)  # the three requests run side by side, all inside the storm

    # For a minute, half of all calls are refused on their first two tries: every kind of call, every service.
    proxy.storm(60, share=0.5, tries=2)
    _, reply, _ = irbot.command(f"isolate {world['instance']}")
    assert "text" in reply, irbot.log_text()[-4000:]
    isolate = request_of(reply)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if isolate in m.get("text", "") and "Approval needed" in m["text"]), None), timeout=60)
    irbot.click(SECOND_RESPONDER, "ir_approve", isolate)
    _, reply, _ = irbot.command(f"collect {world['instance']}")
    collect = request_of(reply)
    _, reply, _ = irbot.command(f"hunt-key {leaked['AccessKeyId']} --since {datetime.now(timezone.utc).date().isoformat()}")
    hunt = request_of(reply)

    text = wait_card(slack, card["ts"], "Done", timeout=240)
    assert "Failed" not in text and "throttl" not in text.lower()
    slack.wait_for(lambda s: any(m["text"].startswith(f"Evidence from {world['instance']}") for m in s.messages(CHANNEL)), timeout=240)
    slack.wait_for(lambda s: any(launched in s.current(CHANNEL, m["ts"])["text"] for m in s.messages(CHANNEL)), timeout=240)
    irbot.settle(timeout=240)

    assert sum(proxy.tally.refused.values()) >= 50 and len(proxy.tally.refused) >= 15  # many calls, of many kinds
    assert {"ModifyInstanceAttribute", "DescribeInstances", "LookupEvents"} <= set(proxy.tally.refused)
    assert any(operation.startswith("PUT /ir-evidence/") for operation in proxy.tally.refused)  # evidence uploads too
    # Each request ended exactly once, and did its work once.
    for request_id in (isolate, collect, hunt):
        assert [r["action"] for r in audit_of(redis_url, request_id)].count("job.finished") == 1, request_id
    isolation = f"irbot-isolation-{world['vpc']}"
    assert group_names(world["instance"]) == [isolation]
    made = boto3.client("ec2").describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [world["vpc"]]}, {"Name": "group-name", "Values": ["irbot-*"]}])
    assert sorted(g["GroupName"] for g in made["SecurityGroups"]) == [f"irbot-isolation-{world['vpc']}", f"irbot-untrack-{world['vpc']}"]
    assert len(boto3.client("iam").list_role_policies(RoleName="web-app")["PolicyNames"]) == 1
    keys = evidence_keys()
    assert any(k.endswith("instance.json") for k in keys) and any(k.endswith("isolation-record.json") for k in keys)
    assert any(k.endswith("hunt-key.json") for k in keys)
    verified = subprocess.run([IRBOT, "audit", "verify"], env={**irbot.env, "AWS_ENDPOINT_URL": proxy.upstream_url}, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_throttling_that_outlasts_every_retry_after_the_first_move_never_leaves_the_interface_allow_all(start_irbot, proxy, slack, world):
    # Two attempts a call, and the move out of the allow-all group refused for 8 s: longer than the
    # client's retries, shorter than isolate's own tries with pauses.
    irbot = start_irbot(AWS_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="2", IR_UNTRACK_PAUSE_SECONDS="0")
    # The move to the allow-all group passes; the move on to the isolation group is throttled.
    proxy.block("ModifyInstanceAttribute", 8, after=1, containing=b"GroupId.1=")
    _, reply, _ = irbot.command(f"isolate {world['instance']}")
    isolate = request_of(reply)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if isolate in m.get("text", "") and "Approval needed" in m["text"]), None))
    irbot.click(SECOND_RESPONDER, "ir_approve", isolate)
    wait_card(slack, card["ts"], "Done", timeout=120)
    text = wait_thread(slack, card["ts"], "Audit records")  # the steps, in the card's thread
    assert "a later try moved" in text and "to the isolation group" in text
    assert group_names(world["instance"]) == [f"irbot-isolation-{world['vpc']}"]
    assert proxy.tally.refused["ModifyInstanceAttribute"] >= 2
