"""The whole organization on moto's server: irbot's own account (evidence bucket) and two member accounts,
each with an instance, the member role and an IAM user with a key; one member also runs an instance in
eu-west-1. moto keeps accounts apart and lets AssumeRole into any account ID."""

from __future__ import annotations

import json
import re

import boto3
import pytest

from chat.writeup import report_markdown
from core.audit import AuditTrail
from core.incidents import Incident, summarise
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER, evidence_keys, make_world
from tests.test_approval import wait_card

OWN, FIRST, SECOND, OUTSIDE = "123456789012", "111111111111", "222222222222", "333333333333"
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{OWN}:root"},
                                                            "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"]}]})


def member_session(account: str, region: str = "us-east-1") -> boto3.Session:
    """The member account as its own administrators see it (to build it, and to check what irbot changed there)."""
    found = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="test")["Credentials"]
    return boto3.Session(aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                         aws_session_token=found["SessionToken"], region_name=region)


def groups_of(session: boto3.Session, instance_id: str, region: str = "us-east-1") -> list[str]:
    found = session.client("ec2", region_name=region).describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [g["GroupName"] for g in found["SecurityGroups"]]


def irbot_groups(session: boto3.Session, region: str = "us-east-1") -> list[str]:
    return [g["GroupName"] for g in session.client("ec2", region_name=region).describe_security_groups()["SecurityGroups"]
            if g["GroupName"].startswith("irbot-")]


@pytest.fixture
def organization(aws, redis_conn):
    own = make_world()  # irbot's own account: the evidence bucket, and an instance nobody should touch
    members = {}
    for account in (FIRST, SECOND):
        session = member_session(account)
        world = make_world(session=session, bucket=None)
        session.client("iam").create_role(RoleName="irbot-responder", AssumeRolePolicyDocument=TRUST)
        iam = session.client("iam")
        iam.create_user(UserName="deploy-bot")
        world["key"] = iam.create_access_key(UserName="deploy-bot")["AccessKey"]
        members[account] = world
    far = make_world("eu-west-1", session=member_session(SECOND, "eu-west-1"), bucket=None)
    members[SECOND]["far_instance"] = far["instance"]
    return {"own": own, "members": members}


def request_of(reply: dict) -> str:
    return re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)


def approve(irbot, slack, reply: dict) -> str:
    request_id = request_of(reply)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    return wait_card(slack, card["ts"], "Done", timeout=60)


def test_isolate_in_a_member_account_changes_that_account_alone(run_irbot, organization, slack, redis_conn):
    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}", IR_UNTRACK_PAUSE_SECONDS="0")
    member = organization["members"][FIRST]
    _, reply, _ = irbot.command(f"isolate {member['instance']} --account {FIRST}")
    text = approve(irbot, slack, reply)
    assert f"in {FIRST}, us-east-1" in text
    assert groups_of(member_session(FIRST), member["instance"]) == [f"irbot-isolation-{member['vpc']}"]
    assert irbot_groups(boto3.Session()) == [] and irbot_groups(member_session(SECOND)) == []  # nothing elsewhere
    keys = [k for k in evidence_keys() if not k.startswith("audit/")]
    assert keys and all(f"/{FIRST}/" in k for k in keys)  # one bucket, the account in every key
    s3 = boto3.client("s3")
    record = next(k for k in keys if k.endswith("isolation-record.json") and not k.startswith("state/"))
    assert s3.head_object(Bucket="ir-evidence", Key=record)["Metadata"]["sha256"]
    records = AuditTrail(redis_conn).records()
    stored = [r for r in records if r["action"] == "evidence.stored"]
    assert stored and all(r["params"]["account"] == FIRST for r in stored)
    # the incident card's line and the report's entry name the account too
    where = f"{member['instance']} ({FIRST}, us-east-1)"
    assert summarise(records)["targets"] == {where: ["isolated"]}
    report = report_markdown(Incident("IR-1", "t", "high", RESPONDER), records, (0, ""), 0)
    assert f"### `{where}`" in report and f"- `/ir isolate` (request {request_of(reply)})" in report


def test_an_account_outside_ir_accounts_is_refused_and_nothing_is_queued(run_irbot, organization, slack, redis_conn):
    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}")
    status, reply, _ = irbot.command(f"isolate {organization['members'][FIRST]['instance']} --account {OUTSIDE}")
    assert status == 200 and reply["response_type"] == "ephemeral"
    assert f"Account {OUTSIDE} is not one irbot may act in: add it to IR_ACCOUNTS" in reply["text"]
    key = organization["members"][FIRST]["key"]["AccessKeyId"]
    _, reply, _ = irbot.command(f"hunt-key {key} --accounts {FIRST},{OUTSIDE}")  # one outside account refuses the whole hunt
    assert reply["response_type"] == "ephemeral" and f"Account {OUTSIDE} is not one irbot may act in" in reply["text"]
    irbot.settle()
    assert slack.messages(CHANNEL) == [] and not redis_conn.keys("irbot:request:*")


def test_revoke_key_acts_in_the_account_that_owns_the_key(run_irbot, organization, slack):
    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}")
    key = organization["members"][SECOND]["key"]["AccessKeyId"]
    _, reply, _ = irbot.command(f"revoke-key {key}")  # no --account: sts:GetAccessKeyInfo says whose it is
    text = approve(irbot, slack, reply)
    assert f"in {SECOND}, IAM (global)" in text
    [found] = member_session(SECOND).client("iam").list_access_keys(UserName="deploy-bot")["AccessKeyMetadata"]
    assert found["Status"] == "Inactive"
    assert member_session(FIRST).client("iam").list_access_keys(UserName="deploy-bot")["AccessKeyMetadata"][0]["Status"] == "Active"


def test_a_finding_from_a_member_account_isolates_there_once_approved(run_irbot, organization, slack, redis_conn, aws):
    from chat.slack import Slack
    from core.settings import load
    from findings.consumer import FindingsConsumer
    from tests.samples import guardduty

    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}", IR_UNTRACK_PAUSE_SECONDS="0")
    member = organization["members"][SECOND]
    # EventBridge delivers it to the findings queue in irbot's own account; `irbot findings` draws the card.
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="irbot-findings")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody=guardduty(accountId=SECOND, resource__instanceDetails__instanceId=member["instance"]))
    FindingsConsumer(sqs, queue, Slack.from_settings(load(__import__("os").environ)), redis_conn, "C0ALERTS01").poll_once()
    finding_card = slack.wait_for(lambda s: next((m for m in s.messages("C0ALERTS01") if m.get("blocks")), None))
    isolate = next(e for b in finding_card["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "ir_request_isolate")
    assert json.loads(isolate["value"])["account"] == SECOND
    irbot.click(RESPONDER, "ir_request_isolate", isolate["value"])
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Approval needed" in m.get("text", "")), None))
    request_id = next(b for b in card["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    assert f"in {SECOND}, us-east-1" in wait_card(slack, card["ts"], "Done", timeout=60)
    assert groups_of(member_session(SECOND), member["instance"]) == [f"irbot-isolation-{member['vpc']}"]
    assert irbot_groups(member_session(FIRST)) == []


class NoEvents:
    """CloudTrail's lookups, which moto lacks (tests/test_containment.py runs the real client against moto once)."""

    def lookup(self, session, region, access_key_id, since):
        return []


def test_hunt_key_across_all_accounts_finds_the_instances_in_both_members_and_both_regions(run_irbot, organization, slack, monkeypatch):
    from datetime import datetime, timezone

    from workers import running

    monkeypatch.setattr(running, "EVENT_SOURCE", NoEvents())
    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}")
    key = organization["members"][FIRST]["key"]["AccessKeyId"]
    irbot.command(f"hunt-key {key} --accounts all --since {datetime.now(timezone.utc).date().isoformat()}")
    irbot.settle(timeout=120)
    # The worst findings are lines of the request's message, the others cards in its thread: every one names its place.
    [message] = slack.top_level(CHANNEL)
    cards = [line for m in [slack.current(CHANNEL, message["ts"]), *slack.thread(CHANNEL, message["ts"])] for line in m["text"].splitlines()]
    members = organization["members"]
    for account, instance, region in ((FIRST, members[FIRST]["instance"], "us-east-1"), (SECOND, members[SECOND]["instance"], "us-east-1"),
                                      (SECOND, members[SECOND]["far_instance"], "eu-west-1")):
        assert any(instance in c and f"{account}, {region}" in c for c in cards), (instance, cards)


def test_a_member_without_the_role_gets_one_sentence_naming_the_role_and_what_to_deploy(run_irbot, organization, slack, aws):
    from standins.aws_proxy import AwsProxy

    proxy = AwsProxy(aws).start()
    try:
        proxy.refuse("AssumeRole", "AccessDenied", 403, times=100)
        irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}", AWS_ENDPOINT_URL_STS=proxy.url)
        irbot.command(f"collect {organization['members'][FIRST]['instance']} --account {FIRST}")
        message = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "failed" in m["text"]), None), timeout=60)
        assert (f"irbot could not get into account {FIRST} as arn:aws:iam::{FIRST}:role/irbot-responder (AccessDenied): "
                "deploy that role there with `irbot iam-policy --member") in message["text"]
        assert "Traceback" not in message["text"]
    finally:
        proxy.stop()


def test_iam_policy_prints_the_member_role_and_lets_the_hub_into_exactly_that_role(tmp_path):
    import os
    import subprocess
    import sys

    hub = f"arn:aws:iam::{OWN}:role/irbot"

    def iam_policy(*args, **env):
        environment = {k: v for k, v in os.environ.items() if not k.startswith("IR_")} | env
        return subprocess.run([sys.executable, "-m", "bot.cli", "iam-policy", *args], capture_output=True, text=True, env=environment, timeout=60)

    member = iam_policy("--member", "--hub-role", hub, IR_ROLE_EXTERNAL_ID="incident-42")
    assert member.returncode == 0, member.stderr
    printed = json.loads(member.stdout)
    trust = printed["TrustPolicy"]["Statement"]
    assert {s["Principal"]["AWS"] for s in trust} == {hub}  # exactly irbot's role, not the hub account's root
    assert {s["Action"] for s in trust} == {"sts:AssumeRole", "sts:SetSourceIdentity"}
    assert next(s for s in trust if s["Action"] == "sts:AssumeRole")["Condition"] == {"Null": {"sts:SourceIdentity": "false"},
                                                                                       "StringEquals": {"sts:ExternalId": "incident-42"}}
    actions = next(s for s in printed["PermissionsPolicy"]["Statement"] if s["Sid"] == "AnyResource")
    assert {"iam:UpdateAccessKey", "ec2:CreateSnapshots"} <= set(actions["Action"])
    scoped = next(s for s in printed["PermissionsPolicy"]["Statement"] if s["Sid"] == "QuarantinedInstances")
    assert "ec2:ModifyInstanceAttribute" in scoped["Action"]  # on quarantine-tagged instances only
    # Evidence stays in irbot's own account: in a member, S3 only as /ir prep reads it (settings, never an object).
    assert not any(a.startswith(("sqs:", "sts:AssumeRole")) for a in actions["Action"])
    assert [a for a in actions["Action"] if a.startswith("s3:")] == [
        "s3:GetAccountPublicAccessBlock", "s3:GetBucket*", "s3:GetEncryptionConfiguration", "s3:ListAllMyBuckets"]

    hub_policy = json.loads(iam_policy("--bucket", "ir-evidence", IR_ACCOUNT_ROLE="ir/responder", IR_ACCOUNTS="org").stdout)
    statements = {s["Sid"]: s for s in hub_policy["Statement"]}
    assert statements["MemberRoles"] == {"Sid": "MemberRoles", "Effect": "Allow", "Action": ["sts:AssumeRole", "sts:SetSourceIdentity"],
                                              "Resource": "arn:aws:iam::*:role/ir/responder"}
    assert "organizations:ListAccounts" in statements["AnyResource"]["Action"]
    listed = json.loads(iam_policy("--bucket", "ir-evidence", IR_ACCOUNTS=f"{FIRST},{SECOND}").stdout)
    assert not any("organizations:ListAccounts" in s["Action"] for s in listed["Statement"])  # only IR_ACCOUNTS=org lists

    for args, said in [(("--member",), "--member needs --hub-role"), (("--member", "--hub-role", "arn:aws:iam::1:user/x"), "--hub-role needs irbot's own role ARN"),
                       (("--hub-role", hub), "--hub-role goes with --member")]:
        refused = iam_policy(*args)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr


def test_collect_in_a_member_account_records_the_assumed_role_and_names_the_account(run_irbot, organization, slack):
    irbot = run_irbot(IR_ACCOUNTS=f"{FIRST},{SECOND}")
    member = organization["members"][SECOND]
    _, reply, _ = irbot.command(f"collect {member['instance']} --account {SECOND}")
    request_id = request_of(reply)
    done = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Evidence collected" in str(m.get("blocks"))), None), timeout=60)
    assert f"({SECOND}, us-east-1)" in done["text"]
    s3 = boto3.client("s3")
    keys = [k for k in evidence_keys() if not k.startswith("audit/")]
    assert len(keys) >= 8 and all(k.split("/")[1] == SECOND for k in keys)  # <incident>/<account>/<target>/...
    assert all(s3.head_object(Bucket="ir-evidence", Key=k)["Metadata"]["sha256"] for k in keys)
    manifest = json.loads(s3.get_object(Bucket="ir-evidence", Key=next(k for k in keys if k.endswith("manifest.json")))["Body"].read())
    assert manifest["account"] == SECOND and manifest["facts"]["identity"]["account"] == SECOND
    # the member's CloudTrail sees irbot's role, in a session named after the request
    assert manifest["facts"]["identity"]["arn"] == f"arn:aws:sts::{SECOND}:assumed-role/irbot-responder/irbot-{request_id}"


def test_the_worker_refuses_an_account_the_bot_could_not_check_and_calls_nothing_there(irbot_env, organization, slack, redis_conn, monkeypatch):
    """The bot gives up asking AWS after 1.5 s and lets the worker decide: the worker checks again, fails closed."""
    from core.approvals import ApprovalBook
    from core.request import CommandRequest
    from workers.jobs import prepare_request

    monkeypatch.setenv("IR_ACCOUNTS", FIRST)
    instance = organization["members"][SECOND]["instance"]
    asked = CommandRequest(command="isolate", targets=(instance,), options={"account": SECOND}, user_id=RESPONDER,
                           channel_id=CHANNEL, incident=CHANNEL)
    book = ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER})
    book.open(asked)
    assert prepare_request(asked.id)["ok"] is False
    assert f"Account {SECOND} is not one irbot may act in: add it to IR_ACCOUNTS" in slack.messages(CHANNEL)[-1]["text"]
    assert book.get(asked.id).state == "failed"
    assert groups_of(member_session(SECOND), instance) != [f"irbot-isolation-{organization['members'][SECOND]['vpc']}"]
    assert irbot_groups(member_session(SECOND)) == []
