"""/ir workstation against moto over HTTP, through the approval gate: volumes made from the incident's snapshots in the
workstation's Availability Zone, tagged and attached, the channel told how to mount them read-only; --detach takes them
away again and leaves the snapshots; a workstation the snapshots can't reach is refused with the reason."""

from __future__ import annotations

import re
import types

import boto3
import pytest

from actions.context import RunContext
from actions.errors import ActionError
from actions.steps import StepLog
from actions.workstation import workstation
from tests.helpers import CHANNEL, SECOND_RESPONDER, amazon_image, make_world, session_of
from tests.test_cloudformation import DEPLOY, enforcing  # noqa: F401 (a fixture)


@pytest.fixture
def lab(aws, redis_conn):
    """The suspect (make_world's instance), a snapshot of its data volume as /ir snapshot tags it, and a running
    workstation in the same subnet, tagged as the deployment tags it."""
    world = make_world()
    ec2 = boto3.client("ec2")
    suspect = ec2.describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]
    data = next(b["Ebs"]["VolumeId"] for b in suspect["BlockDeviceMappings"] if b["DeviceName"] == "/dev/xvdb")
    snapshot = ec2.create_snapshot(VolumeId=data, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "irbot:incident", "Value": CHANNEL}, {"Key": "irbot:instance", "Value": world["instance"]},
        {"Key": "irbot:volume", "Value": data}]}])["SnapshotId"]
    station = ec2.run_instances(ImageId=amazon_image(ec2), InstanceType="t3.large", MinCount=1, MaxCount=1, SubnetId=world["subnet"],
                                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "irbot:role", "Value": "workstation"}]}],
                                )["Instances"][0]
    return {**world, "snapshot": snapshot, "workstation": station["InstanceId"], "zone": station["Placement"]["AvailabilityZone"]}


def irbots_volumes() -> list[dict]:
    return boto3.client("ec2").describe_volumes(Filters=[{"Name": "tag:irbot:purpose", "Values": ["workstation"]}])["Volumes"]


def ask(irbot, slack, command: str) -> str:
    """The command, approved by a second responder; the card and its thread once it ended, as one text."""
    _, reply, _ = irbot.command(command)
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: any(w in s.current(CHANNEL, card["ts"])["text"].splitlines()[0] for w in ("Done", "Failed", "failed")), timeout=60)
    irbot.settle()
    return "\n".join([slack.current(CHANNEL, card["ts"])["text"], *(m["text"] for m in slack.thread(CHANNEL, card["ts"]))])


def done_well(said: str) -> bool:
    return "Done:" in said.splitlines()[0] and ":x:" not in said


def refused(irbot, slack, command: str) -> str:
    """The sentence a request that could not even be planned ends with."""
    _, reply, _ = irbot.command(command)
    assert re.search(r"request `([0-9a-f]{12})`", reply["text"])
    return slack.wait_for(lambda s: next((m["text"] for m in s.messages(CHANNEL) if f"/ir {command} failed for" in m["text"]), None))


def test_the_workstation_gets_a_tagged_attached_volume_to_mount_read_only_and_detach_takes_it_away(lab, run_irbot, slack):
    irbot = run_irbot(IR_WORKSTATION_INSTANCE=lab["workstation"])
    said = ask(irbot, slack, f"workstation {lab['instance']}")  # the instance: the snapshots this incident took of it

    [volume] = irbots_volumes()
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert volume["SnapshotId"] == lab["snapshot"] and volume["AvailabilityZone"] == lab["zone"]
    assert [(a["InstanceId"], a["State"], a["Device"]) for a in volume["Attachments"]] == [(lab["workstation"], "attached", "/dev/sdf")]
    assert tags["irbot:incident"] == CHANNEL and tags["irbot:snapshot"] == lab["snapshot"] and tags["irbot:workstation"] == lab["workstation"]
    assert tags["irbot:instance"] == lab["instance"]
    vol = volume["VolumeId"]
    assert done_well(said), said
    assert f"{vol} (from {lab['snapshot']}) is /dev/sdf" in said
    assert f"sudo mkdir -p /mnt/{vol} &amp;&amp; sudo mount -o ro,noload /dev/sdf1 /mnt/{vol}" in said  # escaped for Slack, shown as &&
    assert f"mount -o ro,norecovery,nouuid /dev/sdf1 /mnt/{vol}" in said and "lsblk -o NAME,SERIAL" in said

    # Asked again, by the snapshot's ID this time: the same volume, found by its tags, and nothing new.
    slack.reset()
    again = ask(irbot, slack, f"workstation {lab['snapshot']}")
    assert [v["VolumeId"] for v in irbots_volumes()] == [vol]
    assert f"{vol}, made earlier" in again and "at /dev/sdf" in again and "is /dev/sdf" in again

    slack.reset()
    gone = ask(irbot, slack, f"workstation {lab['instance']} --detach")
    assert done_well(gone) and "DETACH and DELETE" in gone, gone
    assert irbots_volumes() == [] and lab["snapshot"] in gone
    assert boto3.client("ec2").describe_snapshots(SnapshotIds=[lab["snapshot"]])["Snapshots"][0]["State"] == "completed"  # the evidence stays
    # Detaching again finds nothing left to do.
    slack.reset()
    assert "irbot has no volume of" in ask(irbot, slack, f"workstation {lab['snapshot']} --detach")


def test_a_workstation_in_another_region_is_refused_with_the_reason_and_nothing_is_made(lab, run_irbot, slack):
    elsewhere = f"arn:aws:ec2:eu-west-1:123456789012:instance/{lab['workstation']}"
    irbot = run_irbot(IR_WORKSTATION_INSTANCE=elsewhere)
    said = refused(irbot, slack, f"workstation {lab['snapshot']}")
    assert f"The forensic workstation {lab['workstation']} is in 123456789012, eu-west-1, and this request acts in 123456789012, us-east-1" in said
    assert "Share or copy the snapshot to 123456789012, eu-west-1" in said and "--region eu-west-1" in said
    irbot.settle()
    assert irbots_volumes() == []


def test_an_unknown_snapshot_or_an_instance_never_snapshotted_is_one_sentence(lab, run_irbot, slack):
    irbot = run_irbot(IR_WORKSTATION_INSTANCE=lab["workstation"])
    said = refused(irbot, slack, "workstation snap-0badc0ffee0000000")
    assert said.endswith("Snapshot snap-0badc0ffee0000000 was not found in us-east-1: check the ID, the account and the region (--account, --region).")
    slack.reset()
    said = refused(irbot, slack, f"workstation {lab['workstation']}")  # an instance this incident never snapshotted
    assert said.endswith(f"This incident has no completed snapshot of {lab['workstation']}: run `/ir snapshot {lab['workstation']}` first, then ask again.")
    irbot.settle()
    assert irbots_volumes() == []


def run(target: str, setting: str | None, session: boto3.Session | None = None, **options):
    """The action itself, as a worker runs it for one target."""
    context = RunContext(incident=CHANNEL, requester="U0ALICE01", request_id="r1", account="123456789012", workstation=setting)
    return workstation(session or session_of("workstation"), target, "us-east-1", context=context, steps=StepLog(), poll_seconds=0.1, **options)


def test_without_a_workstation_or_with_one_not_running_or_not_tagged_it_says_what_to_do(lab):
    ec2 = boto3.client("ec2")
    with pytest.raises(ActionError, match=r"^No forensic workstation is set: set IR_WORKSTATION_INSTANCE"):
        run(lab["snapshot"], None)
    with pytest.raises(ActionError, match=r"^The forensic workstation i-0000000000000000f \(IR_WORKSTATION_INSTANCE\) was not found in 123456789012, us-east-1"):
        run(lab["snapshot"], "i-0000000000000000f")
    ec2.delete_tags(Resources=[lab["workstation"]], Tags=[{"Key": "irbot:role"}])
    with pytest.raises(ActionError, match=r"is not tagged irbot:role=workstation, which irbot's policy needs"):
        run(lab["snapshot"], lab["workstation"])
    ec2.stop_instances(InstanceIds=[lab["workstation"]])
    with pytest.raises(ActionError, match=r"is stopped, not running: start it, then ask again\.$"):
        run(lab["snapshot"], lab["workstation"])
    assert irbots_volumes() == []


def test_the_plan_makes_nothing_and_two_snapshots_get_two_device_names(lab):
    ec2 = boto3.client("ec2")
    root = next(b["Ebs"]["VolumeId"] for b in ec2.describe_instances(InstanceIds=[lab["instance"]])["Reservations"][0]["Instances"][0]
                ["BlockDeviceMappings"] if b["DeviceName"] == "/dev/xvda")
    ec2.create_snapshot(VolumeId=root, TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
        {"Key": "irbot:incident", "Value": CHANNEL}, {"Key": "irbot:instance", "Value": lab["instance"]}]}])
    planned = run(lab["instance"], lab["workstation"], dry_run=True)
    assert [s.outcome.value for s in planned.steps] == ["would do"] * 4 and irbots_volumes() == []
    assert "at the first free device name (/dev/sdf)" in planned.steps[1].detail

    done = run(lab["instance"], lab["workstation"])
    assert sorted(v["device"] for v in done.facts["volumes"]) == ["/dev/sdf", "/dev/sdg"]
    assert sorted(a["Device"] for v in irbots_volumes() for a in v["Attachments"]) == ["/dev/sdf", "/dev/sdg"]


def test_a_device_name_taken_by_another_attach_meanwhile_moves_it_to_the_next(lab):
    """AWS refuses an attach at a name another attach took since irbot looked (InvalidParameterValue, "Attachment point
    /dev/sdf is already in use"); moto doesn't, so that one answer is AWS's, given once, after the other attach."""
    ec2 = boto3.client("ec2")
    other = ec2.create_volume(Size=1, AvailabilityZone=lab["zone"])["VolumeId"]
    session = session_of("workstation")
    raced = []

    def other_attach_first(params, **_):
        if params["body"].get("Device") == "/dev/sdf" and not raced:  # the request as it would be sent
            raced.append(ec2.attach_volume(VolumeId=other, InstanceId=lab["workstation"], Device="/dev/sdf"))
            message = "Invalid value '/dev/sdf' for unixDevice. Attachment point /dev/sdf is already in use"
            return types.SimpleNamespace(status_code=400), {"Error": {"Code": "InvalidParameterValue", "Message": message},
                                                            "ResponseMetadata": {"HTTPStatusCode": 400}}
        return None

    session.events.register("before-call.ec2.AttachVolume", other_attach_first)
    done = run(lab["snapshot"], lab["workstation"], session)
    assert raced and [v["device"] for v in done.facts["volumes"]] == ["/dev/sdg"]
    assert "is /dev/sdg. ext4: `sudo mkdir -p" in done.notes[0]


def test_under_enforcement_with_the_deployed_policy_it_works_and_reaches_only_irbots_volumes_and_the_tagged_workstation(
        lab, enforcing, run_irbot, slack):  # noqa: F811 (the fixture)
    """With irbot's role holding only the hub stack's policy, checked as AWS checks it (standins/moto_authorization.py)."""
    from botocore.exceptions import ClientError

    cfn, ec2, iam = boto3.client("cloudformation"), boto3.client("ec2"), boto3.client("iam")
    iam.delete_policy(PolicyArn="arn:aws:iam::123456789012:policy/irbot-quarantine")  # make_world's; the stack makes its own
    cfn.create_stack(StackName="irbot-hub", TemplateBody=(DEPLOY / "hub.yaml").read_text(), Capabilities=["CAPABILITY_NAMED_IAM"])
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName="irbot-hub")["Stacks"][0]["Outputs"]}
    found = boto3.client("sts").assume_role(RoleArn=outputs["IrbotRoleArn"], RoleSessionName="irbot")["Credentials"]
    keys = {"aws_access_key_id": found["AccessKeyId"], "aws_secret_access_key": found["SecretAccessKey"], "aws_session_token": found["SessionToken"]}
    untagged = ec2.run_instances(ImageId=amazon_image(ec2), InstanceType="t3.micro", MinCount=1, MaxCount=1, SubnetId=lab["subnet"])["Instances"][0]["InstanceId"]
    somebodys = ec2.create_volume(Size=1, AvailabilityZone=lab["zone"])["VolumeId"]
    irbot = run_irbot(IR_WORKSTATION_INSTANCE=lab["workstation"], IR_EVIDENCE_BUCKET=outputs["EvidenceBucketName"], AWS_ACCESS_KEY_ID=keys["aws_access_key_id"],
                      AWS_SECRET_ACCESS_KEY=keys["aws_secret_access_key"], AWS_SESSION_TOKEN=keys["aws_session_token"])
    enforcing.on()

    said = ask(irbot, slack, f"workstation {lab['snapshot']}")
    assert done_well(said), said
    stolen = boto3.client("ec2", **keys)
    [mine] = stolen.describe_volumes(Filters=[{"Name": "tag:irbot:purpose", "Values": ["workstation"]}])["Volumes"]
    refusals = {
        "a volume not tagged as irbot's": lambda: stolen.create_volume(SnapshotId=lab["snapshot"], AvailabilityZone=lab["zone"]),
        "irbot's tag on somebody's volume": lambda: stolen.create_tags(Resources=[somebodys], Tags=[{"Key": "irbot:purpose", "Value": "workstation"}]),
        "attaching somebody's volume": lambda: stolen.attach_volume(VolumeId=somebodys, InstanceId=lab["workstation"], Device="/dev/sdh"),
        "deleting somebody's volume": lambda: stolen.delete_volume(VolumeId=somebodys),
    }
    for what, attempt in refusals.items():
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] in ("UnauthorizedOperation", "AccessDenied"), what
    # irbot's own volume, but to an instance that isn't the workstation: refused too
    stolen.detach_volume(VolumeId=mine["VolumeId"], InstanceId=lab["workstation"])  # moto needs the instance named
    with pytest.raises(ClientError) as denied:
        stolen.attach_volume(VolumeId=mine["VolumeId"], InstanceId=untagged, Device="/dev/sdh")
    assert denied.value.response["Error"]["Code"] in ("UnauthorizedOperation", "AccessDenied")

    slack.reset()
    gone = ask(irbot, slack, f"workstation {lab['snapshot']} --detach")
    assert done_well(gone), gone
    enforcing.off()
    assert irbots_volumes() == [] and ec2.describe_volumes(VolumeIds=[somebodys])["Volumes"]
