"""Containment playbooks against moto over HTTP, on a realistic world, through the approval gate:
what changes in AWS, what the channel says, what the audit trail records."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import boto3
import pytest

from actions.configuration import Clients, configuration
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER, evidence_keys, amazon_image, make_containment_world, session_of
from workers import running
from workers.context import state_record_key
from core.approvals import ApprovalBook
from core.audit import AuditTrail
from workers.jobs import execute_request, prepare_request, run_command
from core.request import CommandRequest


@pytest.fixture
def containment(irbot_env, slack, redis_conn, monkeypatch):
    monkeypatch.setenv("IR_UNTRACK_PAUSE_SECONDS", "0")
    return make_containment_world()


def request(command: str, target: str, **options) -> CommandRequest:
    return CommandRequest(command=command, targets=(target,), options=options, user_id=RESPONDER, channel_id=CHANNEL, incident=CHANNEL)


def approved_run(redis_conn, command: str, target: str, **options) -> tuple[dict, CommandRequest]:
    """The gate as the buttons drive it: open, plan (card posted), approve by someone else, execute."""
    asked = request(command, target, **options)
    book = ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER})
    assert book.open(asked).ok
    assert prepare_request(asked.id)["state"] == "pending"
    assert book.approve(asked.id, SECOND_RESPONDER).state == "approved"
    return execute_request(asked.id), asked


def instance(instance_id: str) -> dict:
    return boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def groups_on(instance_id: str) -> list[dict]:
    """The security groups DescribeInstances reports for the instance, and for any interface but the primary."""
    found = instance(instance_id)
    ids = {g["GroupId"] for g in found.get("SecurityGroups", [])}
    for eni in found.get("NetworkInterfaces", []):
        if eni.get("Attachment", {}).get("DeviceIndex", 0) != 0:
            ids.update(g["GroupId"] for g in eni.get("Groups", []))
    return boto3.client("ec2").describe_security_groups(GroupIds=sorted(ids))["SecurityGroups"]


def opens_to_world(group: dict) -> bool:
    return any(r.get("CidrIp") == "0.0.0.0/0" for p in group["IpPermissions"] for r in p.get("IpRanges", [])) or any(
        r.get("CidrIpv6") == "::/0" for p in group["IpPermissions"] for r in p.get("Ipv6Ranges", []))


def in_target_group(world: dict) -> bool:
    health = boto3.client("elbv2").describe_target_health(TargetGroupArn=world["target_group"])["TargetHealthDescriptions"]
    return any(t["Target"]["Id"] == world["instance"] for t in health)


def associated_profile(instance_id: str):
    found = boto3.client("ec2").describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    return [a["IamInstanceProfile"]["Arn"] for a in found if a.get("State", "associated") == "associated"]


def detail_of_first_request(slack) -> dict:
    """The thread of the channel's first request message, as one message: its steps, notes and seal."""
    card = slack.top_level(CHANNEL)[0]
    replies = slack.thread(CHANNEL, card["ts"])
    return {"text": "\n".join(m["text"] for m in replies), "blocks": [b for m in replies for b in m.get("blocks") or []]}


def step_outcomes(outcome: dict) -> dict[str, str]:
    return {s["name"]: s["outcome"] for s in outcome["steps"]}


def test_isolate_contains_the_instance_and_reports_every_step(containment, slack, redis_conn):
    world = containment
    ec2 = boto3.client("ec2")
    assert in_target_group(world) and opens_to_world(groups_on(world["instance"])[0])

    outcome, asked = approved_run(redis_conn, "isolate", world["instance"])
    assert outcome["ok"], outcome
    outcomes = step_outcomes(outcome)
    assert outcomes["record"] == "done" and outcomes["auto-scaling"] == "done" and outcomes["target-groups"] == "done"
    assert outcomes["classic-load-balancers"] == "skipped"

    # The network: no group on it admits the world, and none lets anything out.
    groups = groups_on(world["instance"])
    assert [g["GroupName"] for g in groups] == [f"irbot-isolation-{world['vpc']}"]
    assert not any(opens_to_world(g) for g in groups)
    assert all(g["IpPermissionsEgress"] == [] for g in groups)
    # Out of service: out of the Auto Scaling group (which keeps its capacity) and the target group.
    autoscaling = boto3.client("autoscaling")
    assert autoscaling.describe_auto_scaling_instances(InstanceIds=[world["instance"]])["AutoScalingInstances"] == []
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])["AutoScalingGroups"][0]
    assert group["DesiredCapacity"] == 1 and world["instance"] not in [i["InstanceId"] for i in group["Instances"]]
    assert not in_target_group(world)
    # The evidence is protected.
    assert ec2.describe_instance_attribute(InstanceId=world["instance"], Attribute="disableApiTermination")["DisableApiTermination"]["Value"] is True
    assert ec2.describe_instance_attribute(InstanceId=world["instance"], Attribute="instanceInitiatedShutdownBehavior")["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    volumes = [b for b in instance(world["instance"])["BlockDeviceMappings"] if "Ebs" in b]
    assert len(volumes) >= 2 and all(b["Ebs"]["DeleteOnTermination"] is False for b in volumes)
    # Its credentials are cut.
    assert associated_profile(world["instance"]) == []
    policy = boto3.client("iam").get_role_policy(RoleName="web-app", PolicyName="irbot-revoke-older-sessions")["PolicyDocument"]
    assert policy["Statement"][0]["Effect"] == "Deny" and "aws:TokenIssueTime" in policy["Statement"][0]["Condition"]["DateLessThan"]
    tags = {t["Key"]: t["Value"] for t in instance(world["instance"])["Tags"]}
    assert tags["irbot:status"] == "quarantine" and tags["irbot:incident"] == CHANNEL and tags["irbot:approver"] == SECOND_RESPONDER

    # The record is evidence, with its digest, and what release will use.
    [key] = [k for k in evidence_keys() if k.endswith("isolation-record.json")]
    obj = boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)
    record = json.loads(obj["Body"].read())
    assert record["auto_scaling_group"] == "web-asg" and record["instance_profile"]["arn"] == world["profile"]
    assert record["network_interfaces"][0]["groups"] == [world["web_group"]]

    # Every step is in the channel (in the card's thread; the card counts them) and in the audit trail.
    assert f"{len(outcome['steps'])} steps: " in slack.current(CHANNEL, slack.top_level(CHANNEL)[0]["ts"])["text"]
    card = detail_of_first_request(slack)
    for step in outcome["steps"]:
        assert f"{step['title']} — {step['outcome']}" in card["text"]
    assert "ICMP flows stay tracked" in card["text"]
    audited = [r for r in AuditTrail(redis_conn).records() if r["action"] == "step" and r["params"]["request"] == asked.id]
    assert [r["params"]["step"] for r in audited] == [s["name"] for s in outcome["steps"]]


def test_a_second_isolate_creates_nothing_new_and_changes_nothing(containment, slack, redis_conn):
    world = containment
    ec2 = boto3.client("ec2")
    approved_run(redis_conn, "isolate", world["instance"])
    groups_before = {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    record_before = redis_conn.get(state_record_key("123456789012", "us-east-1", world["instance"]))
    time.sleep(1.1)  # IAM's condition times have whole seconds

    outcome, _ = approved_run(redis_conn, "isolate", world["instance"])
    assert outcome["ok"]
    assert {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]} == groups_before
    outcomes = step_outcomes(outcome)
    # The older-sessions cutoff moves up to this request (sessions issued since the first would live).
    assert outcomes.pop("revoke-sessions:web-app") == "done"
    assert set(outcomes.values()) <= {"already so", "skipped"}, outcome["steps"]
    assert redis_conn.get(state_record_key("123456789012", "us-east-1", world["instance"])) == record_before  # the original state is kept


def test_release_puts_back_exactly_what_was_recorded(containment, slack, redis_conn):
    world = containment
    aws = Clients(session_of("isolate"), "us-east-1")  # configuration() is what isolate reads
    before = configuration(aws, instance(world["instance"]))
    approved_run(redis_conn, "isolate", world["instance"])

    outcome, _ = approved_run(redis_conn, "release", world["instance"])
    assert outcome["ok"], outcome
    after = configuration(aws, instance(world["instance"]))
    for field in ("network_interfaces", "auto_scaling_group", "termination_protection", "shutdown_behavior", "volumes", "classic_load_balancers"):
        assert after[field] == before[field], field
    assert [(m["arn"], m["port"]) for m in after["target_groups"]] == [(m["arn"], m["port"]) for m in before["target_groups"]]
    assert after["instance_profile"]["arn"] == before["instance_profile"]["arn"]
    assert after["tags"]["irbot:status"] == "released"
    assert "Environment" not in after["tags"]  # isolation's Environment=Quarantine:… is gone again
    assert any(k.endswith("isolation-record.json") for k in evidence_keys())  # the evidence stays


@pytest.mark.parametrize("kept_in", ["redis", "bucket"])
def test_release_finds_a_record_kept_before_records_named_their_account(containment, redis_conn, monkeypatch, kept_in):
    """An instance isolated by an irbot before the organization issue: its record sits under the old key
    (irbot:isolation:<region>:<instance>) or the old bucket prefix (state/<region>/<instance>/)."""
    world = containment
    approved_run(redis_conn, "isolate", world["instance"])
    [key] = redis_conn.keys(f"irbot:isolation:*:{world['instance']}")
    record = redis_conn.get(key)
    redis_conn.delete(key)
    boto3.client("s3").create_bucket(Bucket="ir-evidence-2", ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("IR_EVIDENCE_BUCKET", "ir-evidence-2")  # a bucket without the new copy
    if kept_in == "redis":
        redis_conn.set(f"irbot:isolation:us-east-1:{world['instance']}", record)
    else:
        boto3.client("s3").put_object(Bucket="ir-evidence-2", Key=f"state/us-east-1/{world['instance']}/20250101T000000Z-old.json", Body=record)
    outcome, _ = approved_run(redis_conn, "release", world["instance"])
    assert outcome["ok"], outcome
    assert instance(world["instance"])["Tags"] and {t["Key"]: t["Value"] for t in instance(world["instance"])["Tags"]}["irbot:status"] == "released"


def test_release_of_an_instance_irbot_never_isolated_says_so_and_changes_nothing(containment, slack, redis_conn):
    asked = request("release", containment["instance"])
    book = ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER})
    book.open(asked)
    assert prepare_request(asked.id)["ok"] is False
    assert "irbot has no isolation record for" in slack.messages(CHANNEL)[-1]["text"]
    assert book.get(asked.id).state == "failed"


def test_isolate_dry_run_lists_the_plan_and_changes_nothing(containment, slack, redis_conn):
    world = containment
    ec2 = boto3.client("ec2")
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    outcome = run_command(request("isolate", world["instance"], dry_run=True).to_dict())
    assert outcome["ok"]
    assert {s["outcome"] for s in outcome["steps"]} <= {"would do", "skipped", "already so"}
    assert step_outcomes(outcome)["network:" + instance(world["instance"])["NetworkInterfaces"][0]["NetworkInterfaceId"]] == "would do"
    assert ec2.describe_security_groups()["SecurityGroups"] == groups_before
    assert in_target_group(world) and associated_profile(world["instance"]) == [world["profile"]]
    text = slack.messages(CHANNEL)[0]["text"]
    assert slack.current(CHANNEL, slack.messages(CHANNEL)[0]["ts"])["text"].startswith("Dry run, nothing changed")
    assert text  # the progress message was posted first, then redrawn


def test_isolate_lets_ssh_in_from_the_analyst_alone_when_configured(containment, slack, redis_conn, monkeypatch):
    monkeypatch.setenv("IR_ANALYST_CIDR", "203.0.113.7/32")
    approved_run(redis_conn, "isolate", containment["instance"])
    [group] = groups_on(containment["instance"])
    assert group["IpPermissions"] == [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.7/32"}],
                                       "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}]
    assert group["IpPermissionsEgress"] == []


def test_revoke_key_deactivates_quarantines_and_reports_the_other_ways_in(containment, slack, redis_conn):
    iam = boto3.client("iam")
    leaked, other = (k["AccessKeyId"] for k in containment["keys"])
    outcome, _ = approved_run(redis_conn, "revoke-key", leaked)
    assert outcome["ok"], outcome
    keys = {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName="deploy-bot")["AccessKeyMetadata"]}
    assert keys == {leaked: "Inactive", other: "Active"}
    # the deployment's quarantine policy, attached (irbot writes no policy of its own onto the user)
    [attached] = iam.list_attached_user_policies(UserName="deploy-bot")["AttachedPolicies"]
    assert attached["PolicyName"] == "irbot-quarantine" and iam.list_user_policies(UserName="deploy-bot")["PolicyNames"] == []
    version = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]["DefaultVersionId"]
    policy = iam.get_policy_version(PolicyArn=attached["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
    policy = json.loads(policy) if isinstance(policy, str) else policy
    denied = policy["Statement"][0]
    assert denied["Effect"] == "Deny" and {"iam:CreateAccessKey", "iam:CreateUser", "ec2:RunInstances", "lambda:CreateFunction"} <= set(denied["Action"])
    assert policy["Statement"][1]["Condition"] == {"Null": {"aws:TokenIssueTime": "false"}}  # every session made from its keys
    card = detail_of_first_request(slack)["text"]
    assert f"other active keys: {other}" in card and "no console password" in card

    again, _ = approved_run(redis_conn, "revoke-key", leaked)
    assert step_outcomes(again) == {"owner": "done", "deactivate": "already so", "quarantine": "already so", "other-ways-in": "done"}


def test_revoke_key_where_the_quarantine_policy_was_never_deployed_says_so(containment, slack, redis_conn):
    iam = boto3.client("iam")
    arn = next(p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "irbot-quarantine")
    iam.delete_policy(PolicyArn=arn)
    leaked = containment["keys"][0]["AccessKeyId"]
    outcome, _ = approved_run(redis_conn, "revoke-key", leaked)
    assert step_outcomes(outcome)["deactivate"] == "done" and step_outcomes(outcome)["quarantine"] == "failed"
    card = detail_of_first_request(slack)["text"]
    assert "irbot-quarantine is not in this account" in card and "deploy/cloudformation" in card, card


def test_revoke_key_refuses_a_quarantine_policy_that_is_not_irbots(containment, slack, redis_conn):
    iam = boto3.client("iam")
    arn = next(p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "irbot-quarantine")
    # whoever made a policy of that name first chose what it says: here, nothing at all is denied
    iam.create_policy_version(PolicyArn=arn, SetAsDefault=True, PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    outcome, _ = approved_run(redis_conn, "revoke-key", containment["keys"][0]["AccessKeyId"])
    assert step_outcomes(outcome)["deactivate"] == "done" and step_outcomes(outcome)["quarantine"] == "failed"
    assert boto3.client("iam").list_attached_user_policies(UserName="deploy-bot")["AttachedPolicies"] == []
    card = detail_of_first_request(slack)["text"]
    assert "is not irbot's quarantine policy" in card, card


def test_revoke_key_with_delete_deletes_it(containment, slack, redis_conn):
    leaked = containment["keys"][0]["AccessKeyId"]
    outcome, _ = approved_run(redis_conn, "revoke-key", leaked, delete=True)
    assert step_outcomes(outcome)["delete"] == "done"
    keys = [k["AccessKeyId"] for k in boto3.client("iam").list_access_keys(UserName="deploy-bot")["AccessKeyMetadata"]]
    assert leaked not in keys


class FakeCloudTrail:
    """LookupEvents, which moto lacks: the RunInstances events of the leaked key, per region."""

    def __init__(self, key_id: str, launched: dict[str, str]):
        self.key_id, self.launched = key_id, launched
        self.asked: list[str] = []

    def lookup(self, session, region, access_key_id, since):
        self.asked.append(region)
        if access_key_id != self.key_id or region not in self.launched:
            return []
        instance_id = self.launched[region]
        return [{"name": "RunInstances", "time": datetime.now(timezone.utc), "region": region, "username": "deploy-bot",
                 "resources": [("AWS::EC2::Instance", instance_id)], "event": {"userIdentity": {"type": "IAMUser"}}}]


def test_hunt_key_finds_instances_the_key_launched_in_two_other_regions(containment, slack, redis_conn, monkeypatch):
    leaked = containment["keys"][0]
    attacker = boto3.Session(aws_access_key_id=leaked["AccessKeyId"], aws_secret_access_key=leaked["SecretAccessKey"])
    launched = {}
    for region in ("eu-west-1", "ap-southeast-2"):
        ec2 = attacker.client("ec2", region_name=region)
        image = amazon_image(ec2)
        launched[region] = ec2.run_instances(ImageId=image, InstanceType="c5.9xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    trail = FakeCloudTrail(leaked["AccessKeyId"], launched)
    monkeypatch.setattr(running, "EVENT_SOURCE", trail)

    today = datetime.now(timezone.utc).date().isoformat()
    outcome = run_command(request("hunt-key", leaked["AccessKeyId"], since=today).to_dict())
    assert outcome["ok"], outcome
    found = {(f["id"], f["region"]): f for f in outcome["facts"]["findings"]}
    for region, instance_id in launched.items():
        assert found[(instance_id, region)]["by_key"] is True
    assert {"eu-west-1", "ap-southeast-2", "us-east-1"} <= set(trail.asked)  # every enabled region was searched
    # One message in the channel: the worst findings named, each with the buttons that act on it; the others are
    # cards in its thread, with theirs.
    [message] = slack.top_level(CHANNEL)
    summary = slack.current(CHANNEL, message["ts"])
    total = len(outcome["facts"]["findings"])
    assert f"{total} findings, the worst 3:" in summary["text"]
    for region, instance_id in launched.items():
        assert f"• instance {instance_id} in 123456789012, {region}, made by the key (CloudTrail)" in summary["text"]
        [line] = [i for i, b in enumerate(summary["blocks"]) if instance_id in b.get("text", {}).get("text", "")]
        buttons = summary["blocks"][line + 1]["elements"]
        assert [json.loads(b["value"]) for b in buttons] == [
            {"command": "isolate", "target": instance_id, "region": region, "account": "123456789012"},
            {"command": "stop", "target": instance_id, "region": region, "account": "123456789012"}]
    cards = [m for m in slack.thread(CHANNEL, message["ts"]) if m["text"].startswith("Finding of /ir hunt-key")]
    assert len(cards) == total - 3 and not any(i in c["text"] for c in cards for i in launched.values())
    assert all(any(b["type"] == "actions" for b in c["blocks"]) for c in cards if "access-key" in c["text"])
    assert any(k.endswith("hunt-key.json") for k in evidence_keys())


def test_snapshot_takes_every_volume_once_tagged_and_copies_encrypted(containment, slack, redis_conn):
    kms = boto3.client("kms").create_key(Description="forensics")["KeyMetadata"]["KeyId"]
    asked = request("snapshot", containment["instance"], copy_to_kms=kms)
    outcome = run_command(asked.to_dict())
    assert outcome["ok"], outcome
    ec2 = boto3.client("ec2")
    volumes = {b["Ebs"]["VolumeId"] for b in instance(containment["instance"])["BlockDeviceMappings"] if "Ebs" in b}
    snaps = ec2.describe_snapshots(Filters=[{"Name": "tag:irbot:request", "Values": [asked.id]}])["Snapshots"]
    assert {s["VolumeId"] for s in snaps} == volumes
    for snap in snaps:
        tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
        assert tags["irbot:incident"] == CHANNEL and tags["irbot:instance"] == containment["instance"]
        assert tags["irbot:requester"] == RESPONDER and tags["irbot:volume"] == snap["VolumeId"]
    copies = ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["irbot:copy-of"]}])["Snapshots"]
    assert len(copies) == len(snaps) and all(c["Encrypted"] for c in copies)
    assert step_outcomes(outcome)["complete"] == "done"
    # Run again (a retried job): no new snapshots.
    again = run_command(asked.to_dict())
    assert step_outcomes(again)["snapshot"] == "already so"
    assert len(ec2.describe_snapshots(Filters=[{"Name": "tag:irbot:request", "Values": [asked.id]}])["Snapshots"]) == len(snaps)


def test_compromise_runs_the_playbook_and_stops_only_when_asked(containment, slack, redis_conn):
    outcome, _ = approved_run(redis_conn, "compromise", containment["instance"])
    outcomes = step_outcomes(outcome)
    assert outcomes["collect"] == "done" and outcomes["snapshot"] == "done" and outcomes["record"] == "done"
    assert outcomes["stop-instance"] == "skipped" and instance(containment["instance"])["State"]["Name"] == "running"
    assert any(k.endswith("instance.json") for k in evidence_keys()) and any(k.endswith("isolation-record.json") for k in evidence_keys())

    stopped, _ = approved_run(redis_conn, "compromise", containment["instance"], stop=True)
    assert step_outcomes(stopped)["stop-instance"] == "done"
    assert instance(containment["instance"])["State"]["Name"] in ("stopping", "stopped")


def test_isolate_warns_where_connections_may_stay_tracked(containment, slack, redis_conn):
    ec2 = boto3.client("ec2")
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=containment["subnet"], AllocationId=allocation)["NatGateway"]["NatGatewayId"]
    table = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [containment["vpc"]]}])["RouteTables"][0]["RouteTableId"]
    ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat)
    outcome, _ = approved_run(redis_conn, "isolate", containment["instance"])
    card = detail_of_first_request(slack)
    assert f"Connections through NAT gateway {nat} may stay tracked" in card["text"]
    assert any(f"NAT gateway {nat}" in e["text"] for b in card["blocks"] if b["type"] == "context" for e in b["elements"])


def test_hunt_key_with_the_real_cloudtrail_client_reports_what_it_found_where_lookupevents_fails(containment, slack, redis_conn):
    """moto's server lacks LookupEvents (HTTP 500, an HTML page): each region loses only its events."""
    from actions.cloudtrail import CloudTrailEvents

    assert isinstance(running.EVENT_SOURCE, CloudTrailEvents)  # the real client, not a stand-in
    leaked = containment["keys"][0]
    attacker = boto3.Session(aws_access_key_id=leaked["AccessKeyId"], aws_secret_access_key=leaked["SecretAccessKey"])
    ec2 = attacker.client("ec2", region_name="eu-west-1")
    instance_id = ec2.run_instances(ImageId=amazon_image(ec2), InstanceType="c5.9xlarge", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.create_key_pair(KeyName="backdoor")

    outcome = run_command(request("hunt-key", leaked["AccessKeyId"], since=datetime.now(timezone.utc).date().isoformat()).to_dict())
    found = {(f["kind"], f["id"], f["region"]) for f in outcome["facts"]["findings"]}
    assert ("instance", instance_id, "eu-west-1") in found and ("key-pair", "backdoor", "eu-west-1") in found
    gaps = [s for s in outcome["steps"] if s["name"].endswith(":gaps")]
    assert {s["name"] for s in gaps} >= {"region:eu-west-1:gaps", "region:us-east-1:gaps"}
    assert all(s["detail"].startswith("couldn't search CloudTrail events (AWS answered cloudtrail:LookupEvents in ") for s in gaps)
    assert len(gaps) == len({s["name"] for s in gaps})  # one line a region
    text = " ".join(m["text"] + json.dumps(m.get("blocks")) for m in (slack.current(CHANNEL, p["ts"]) for p in slack.messages(CHANNEL)))
    assert instance_id in text and "html" not in text.lower() and "<?xml" not in text


def test_hunt_key_cards_are_capped_and_hostile_names_reach_the_channel_as_text(containment, slack, redis_conn):
    """The holder of a leaked key names what it makes, and can make thousands: neither may steer the channel."""
    leaked = containment["keys"][0]
    attacker = boto3.Session(aws_access_key_id=leaked["AccessKeyId"], aws_secret_access_key=leaked["SecretAccessKey"])
    ec2 = attacker.client("ec2", region_name="eu-west-1")
    hostile = "<!channel> <https://evil.example/sso|Slack SSO expired - sign in>"
    for n in range(24):
        ec2.create_key_pair(KeyName=f"{hostile} {n:02d}")

    outcome = run_command(request("hunt-key", leaked["AccessKeyId"], since=datetime.now(timezone.utc).date().isoformat()).to_dict())
    assert len([f for f in outcome["facts"]["findings"] if f["kind"] == "key-pair"]) == 24
    # 20 findings shown: the worst 3 in the request's message, 17 as cards in its thread; the rest counted there.
    [message] = slack.top_level(CHANNEL)
    cards = [m for m in slack.thread(CHANNEL, message["ts"]) if m["text"].startswith("Finding of /ir hunt-key")]
    assert len(cards) == 17 and slack.current(CHANNEL, message["ts"])["text"].count("\n• ") == 3
    posted = json.dumps([c.params for c in slack.calls])
    assert "<!channel>" not in posted and "<https://evil" not in posted and "&lt;!channel&gt;" in posted
    report = "\n".join(m["text"] for m in slack.thread(CHANNEL, message["ts"]))
    total = len(outcome["facts"]["findings"])
    assert f"{total - 20} more findings (" in report and f"all {total} are in the saved evidence" in report
    [key] = [k for k in evidence_keys() if k.endswith("hunt-key.json")]
    stored = json.loads(boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)["Body"].read())
    assert len([f for f in stored["findings"] if f["kind"] == "key-pair"]) == 24


def test_tags_the_suspect_wrote_never_decide_isolation_and_the_record_outlives_redis(containment, slack, redis_conn):
    """An instance's own role can often tag it: `irbot:status` preset by the suspect must not skip the record or
    the tags, nor make a later isolate overwrite the original state; and release finds the record in the bucket."""
    world = containment
    ec2 = boto3.client("ec2")
    original = sorted(g["GroupId"] for g in groups_on(world["instance"]))
    ec2.create_tags(Resources=[world["instance"]], Tags=[{"Key": "irbot:status", "Value": "quarantine"}])  # by the suspect

    outcome, asked = approved_run(redis_conn, "isolate", world["instance"])
    assert outcome["ok"] and step_outcomes(outcome)["record"] == "done" and step_outcomes(outcome)["tag"] == "done"
    tags = {t["Key"]: t["Value"] for t in instance(world["instance"])["Tags"]}
    assert tags["irbot:incident"] == CHANNEL and tags["irbot:requester"] == RESPONDER
    assert any(k.endswith("isolation-record.json") for k in evidence_keys())

    # The suspect now claims it was released: a second isolate still keeps the original state, not the isolated one.
    ec2.create_tags(Resources=[world["instance"]], Tags=[{"Key": "irbot:status", "Value": "released"}])
    time.sleep(1.1)  # IAM's condition times have whole seconds
    assert approved_run(redis_conn, "isolate", world["instance"])[0]["ok"]

    redis_conn.flushdb()  # Redis loses everything: the record is still in the bucket
    outcome, _ = approved_run(redis_conn, "release", world["instance"])
    assert outcome["ok"], outcome
    assert sorted(g["GroupId"] for g in groups_on(world["instance"])) == original
    # irbot's own record now says released: a second release is refused at its plan, and changes nothing.
    again = request("release", world["instance"])
    assert ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER}).open(again).ok
    planned = prepare_request(again.id)
    assert not planned["ok"] and "was released already" in planned["error"]
    assert sorted(g["GroupId"] for g in groups_on(world["instance"])) == original


def test_compromise_keeps_the_capture_path_open_and_its_plan_says_when_there_is_none(containment, slack, redis_conn, monkeypatch, tmp_path):
    """compromise isolates before it captures memory: the isolation must still admit the capture's SSH, and nothing else."""
    key = tmp_path / "id_ed25519"
    key.write_text("a key\n")
    monkeypatch.setenv("IR_SSH_KEY", str(key))
    world = containment
    plan = run_command(request("compromise", world["instance"], dry_run=True).to_dict())
    memory = next(s for s in plan["steps"] if s["name"] == "memory")
    assert memory["outcome"] == "failed" and "admits SSH from nowhere, so the capture can't reach it" in memory["detail"]

    ec2 = boto3.client("ec2")
    workers = ec2.create_security_group(GroupName="irbot-workers", Description="irbot's workers", VpcId=world["vpc"])["GroupId"]
    monkeypatch.setenv("IR_CAPTURE_SOURCE_SG", workers)
    plan = run_command(request("compromise", world["instance"], dry_run=True).to_dict())
    assert not any(s["name"] == "memory" and s["outcome"] == "failed" for s in plan["steps"])
    outcome, _ = approved_run(redis_conn, "isolate", world["instance"])
    assert outcome["ok"]
    [isolation] = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [f"irbot-isolation-{world['vpc']}"]}])["SecurityGroups"]
    assert [(p["IpProtocol"], p.get("FromPort"), [g["GroupId"] for g in p.get("UserIdGroupPairs", [])], p.get("IpRanges"))
            for p in isolation["IpPermissions"]] == [("tcp", 22, [workers], [])]
    assert isolation["IpPermissionsEgress"] == []
