"""Words, through Slack's paths: counts said right, the scope said truthfully (every region, IAM, a host), regions of
another partition refused at once with a sentence, and incident channels named at a word boundary."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import boto3

from tests.helpers import CHANNEL, amazon_image

ACCOUNT = "123456789012"


def finished(slack, marker: str, start: str = "Done") -> str:
    """The text of the channel message (as redrawn) that mentions ``marker``, once it starts with ``start``."""
    def find(s):
        for m in s.messages(CHANNEL):
            now = s.current(CHANNEL, m["ts"])
            if marker in now["text"] and now["text"].startswith(start):
                return now["text"]
        return None
    return slack.wait_for(find, timeout=60)


def with_thread(slack, text: str, phrase: str) -> str:
    """A request's message and its thread (its steps are there), once ``phrase`` is among them."""
    def find(s):
        for m in s.top_level(CHANNEL):
            if s.current(CHANNEL, m["ts"])["text"] == text:
                whole = "\n".join([text, *(r["text"] for r in s.thread(CHANNEL, m["ts"]))])
                return whole if phrase in whole else None
        return None
    return slack.wait_for(find, timeout=60)


def test_counts_are_said_right_for_one_and_for_many(run_irbot, world, slack):
    ec2 = boto3.client("ec2")
    single = ec2.run_instances(ImageId=amazon_image(ec2), InstanceType="t3.micro", MinCount=1, MaxCount=1,
                               SubnetId=world["subnet"])["Instances"][0]["InstanceId"]
    irbot = run_irbot()
    irbot.command(f"snapshot {single}")
    one = with_thread(slack, finished(slack, f"/ir snapshot {single}"), "Wait for the snapshots")
    assert "Snapshot its volume — done" in one and "Wait for the snapshots to complete — done: completed" in one
    assert not re.search(r"\b1 volumes\b|all 1 completed", one)
    irbot.command(f"snapshot {world['instance']}")
    two = with_thread(slack, finished(slack, f"/ir snapshot {world['instance']}"), "Wait for the snapshots")
    assert "Snapshot 2 volumes together — done" in two and "— done: all 2 completed" in two


def test_hunt_key_says_every_enabled_region_and_iam_findings_are_global_not_in_global(run_irbot, world, slack):
    iam = boto3.client("iam")
    iam.create_user(UserName="ci-deploy")
    key = iam.create_access_key(UserName="ci-deploy")["AccessKey"]["AccessKeyId"]
    regions = [r for r in boto3.client("ec2").describe_regions()["Regions"]
               if r.get("OptInStatus", "opt-in-not-required") in ("opt-in-not-required", "opted-in") and not r["RegionName"].startswith(("cn-", "us-gov-"))]
    irbot = run_irbot()
    today = datetime.now(timezone.utc).date().isoformat()
    irbot.command(f"hunt-key {key} --since {today}")
    text = finished(slack, f"/ir hunt-key {key}")
    assert f"in all {len(regions)} enabled regions of {ACCOUNT}, for <@" in text
    assert "us-east-1, for" not in text
    # the worst findings are lines of its message, the others cards in its thread
    cards = [text, *(m["text"] for m in slack.messages(CHANNEL) if m["text"].startswith("Finding of /ir hunt-key"))]
    assert any(f"iam-user ci-deploy in {ACCOUNT}, IAM (global)" in c for c in cards), cards
    assert not any(re.search(r"\bin [^,]*, global\b|\bin global\b", c) for c in cards)


def test_revoke_key_says_iam_is_global(run_irbot, world, slack):
    iam = boto3.client("iam")
    iam.create_user(UserName="ci-deploy")
    key = iam.create_access_key(UserName="ci-deploy")["AccessKey"]["AccessKeyId"]
    irbot = run_irbot()
    irbot.command(f"revoke-key {key}")
    card = finished(slack, f"/ir revoke-key {key}", start=":lock: Approval needed")
    assert card.startswith(f":lock: Approval needed: `/ir revoke-key {key}` in {ACCOUNT}, IAM (global), requested by")
    assert "us-east-1" not in card.splitlines()[0]


def test_memory_on_user_at_host_says_the_host_not_a_region(run_irbot, world, slack, sshd, memory_source):
    irbot = run_irbot(IR_SSH_KEY=str(sshd.client_keys["ed25519"]), IR_SSH_KNOWN_HOSTS=str(sshd.known_hosts),
                      IR_MEMORY_COMMAND=f"cat {memory_source}", IR_MEMORY_SIZE_COMMAND=f"stat -c %s {memory_source}")
    irbot.command(f"memory {sshd.target()}")
    card = finished(slack, f"/ir memory {sshd.target()}", start=":lock: Approval needed")
    assert card.startswith(f":lock: Approval needed: `/ir memory {sshd.target()}` on host 127.0.0.1, requested by"), card.splitlines()[0]
    assert "us-east-1" not in card.splitlines()[0]


def test_a_region_of_another_partition_is_refused_at_once_with_a_sentence(run_irbot, world, slack):
    irbot = run_irbot()
    for region, name in (("cn-north-1", "AWS China (aws-cn)"), ("us-gov-west-1", "AWS GovCloud (US) (aws-us-gov)")):
        status, reply, elapsed = irbot.command(f"collect {world['instance']} --region {region}")
        assert status == 200 and elapsed < 3 and reply["response_type"] == "ephemeral"
        assert reply["text"].startswith(f"`--region {region}` is in {name}, but irbot's credentials are for AWS (aws, region us-east-1)")
    irbot.settle()
    assert not slack.messages(CHANNEL)  # nothing queued, nothing run
    status, reply, _ = irbot.command(f"collect {world['instance']} --region eu-west-1")  # the same partition goes ahead
    assert reply["response_type"] == "ephemeral" and reply["text"].startswith("Queued") and "in eu-west-1" in reply["text"]


def test_incident_channels_are_named_at_a_word_boundary(run_irbot, world, slack):
    irbot = run_irbot()
    for title in ("EC2 instance i-1f2053948842324a1 is querying a Bitcoin domain",
                  "Miner found on web-1 and on i-1f2053948842324a1 today"):
        irbot.command(f"declare {title}")
    slack.wait_for(lambda s: len(s.calls_to("conversations.create")) == 2)
    names = sorted(re.sub(r"^ir-\d{8}-\d{3}-", "", c.params["name"]) for c in slack.calls_to("conversations.create"))
    assert names == ["ec2-instance-i-1f2053948842324a1", "miner-found-on-web-1"]
