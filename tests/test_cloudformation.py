"""deploy/cloudformation: generated from the registry, clean under cfn-lint, and deployable. moto's
CloudFormation builds the hub in irbot's account and the member role in another; the outputs are what
irbot is configured with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from bot import templates
from bot.policies import POLICY_PARTS, policy_document

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "cloudformation"
MEMBER = "222222222222"


def test_the_committed_templates_are_what_the_registry_generates():
    for name, text in templates.rendered().items():
        assert (DEPLOY / name).read_text() == text, f"deploy/cloudformation/{name} drifted: run `irbot templates`"


def test_cfn_lint_passes_on_both_templates():
    linted = subprocess.run([str(Path(sys.executable).with_name("cfn-lint")), str(DEPLOY / "hub.yaml"), str(DEPLOY / "member.yaml")],
                            capture_output=True, text=True, timeout=300)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_evidence_bucket_is_locked_versioned_private_and_tls_only_in_the_template_itself():
    # moto's CloudFormation ignores ObjectLockConfiguration: the template is checked for it instead
    bucket = templates.hub_template()["Resources"]["EvidenceBucket"]["Properties"]
    assert bucket["ObjectLockEnabled"] is True
    assert bucket["ObjectLockConfiguration"]["Rule"]["DefaultRetention"] == {"Mode": {"Ref": "LockMode"}, "Days": {"Ref": "RetentionDays"}}
    assert templates.hub_template()["Parameters"]["LockMode"]["Default"] == "COMPLIANCE"
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"} and all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    statements = {s["Sid"]: s for s in templates.hub_template()["Resources"]["EvidenceBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and statements["TlsOnly"]["Effect"] == "Deny"
    assert {"s3:DeleteObject", "s3:DeleteObjectVersion"} <= set(statements["NoDeletes"]["Action"])
    # everywhere but the stages, which irbot deletes once copied (core.evidence.STAGING)
    assert statements["NoDeletes"]["NotResource"] == {"Fn::Sub": "${EvidenceBucket.Arn}/staging/*"} and "Resource" not in statements["NoDeletes"]


def test_the_hub_and_a_member_deploy_and_their_outputs_configure_irbot(aws):
    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="irbot-hub", TemplateBody=(DEPLOY / "hub.yaml").read_text(), Capabilities=["CAPABILITY_NAMED_IAM"])
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName="irbot-hub")["Stacks"][0]["Outputs"]}
    assert set(outputs) == {"EvidenceBucketName", "FindingsQueueUrl", "IrbotRoleArn"}
    assert outputs["IrbotRoleArn"] == "arn:aws:iam::123456789012:role/irbot"

    sqs = boto3.client("sqs")
    redrive = json.loads(sqs.get_queue_attributes(QueueUrl=outputs["FindingsQueueUrl"], AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert redrive["maxReceiveCount"] == 5 and redrive["deadLetterTargetArn"].startswith("arn:aws:sqs:")
    rules = {r["Name"]: r for r in boto3.client("events").list_rules()["Rules"]}
    assert json.loads(rules["irbot-guardduty-findings"]["EventPattern"])["source"] == ["aws.guardduty"]
    assert json.loads(rules["irbot-securityhub-findings"]["EventPattern"])["source"] == ["aws.securityhub"]

    iam = boto3.client("iam")
    attached = iam.list_attached_role_policies(RoleName="irbot")["AttachedPolicies"]
    [hub] = [p for p in attached if p["PolicyName"] == "irbot-hub"]
    version = iam.get_policy(PolicyArn=hub["PolicyArn"])["Policy"]["DefaultVersionId"]
    deployed = iam.get_policy_version(PolicyArn=hub["PolicyArn"], VersionId=version)["PolicyVersion"]["Document"]
    deployed = json.loads(deployed) if isinstance(deployed, str) else deployed
    # the role holds exactly the policy `irbot iam-policy` prints for that bucket
    assert deployed == policy_document(outputs["EvidenceBucketName"])

    found = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{MEMBER}:role/admin", RoleSessionName="deploy")["Credentials"]
    member = boto3.Session(aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                           aws_session_token=found["SessionToken"], region_name="us-east-1")
    member_cfn = member.client("cloudformation")
    member_cfn.create_stack(StackName="irbot-member", TemplateBody=(DEPLOY / "member.yaml").read_text(), Capabilities=["CAPABILITY_NAMED_IAM"],
                            Parameters=[{"ParameterKey": "HubRoleArn", "ParameterValue": outputs["IrbotRoleArn"]},
                                        {"ParameterKey": "ExternalId", "ParameterValue": "ir-42"}])
    [member_outputs] = [s["Outputs"] for s in member_cfn.describe_stacks(StackName="irbot-member")["Stacks"]]
    assert member_outputs == [{"OutputKey": "ResponderRoleArn", "OutputValue": f"arn:aws:iam::{MEMBER}:role/irbot-responder"}]
    trust = member.client("iam").get_role(RoleName="irbot-responder")["Role"]["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert {s["Principal"]["AWS"] for s in trust["Statement"]} == {outputs["IrbotRoleArn"]}
    assert trust["Statement"][0]["Condition"] == {"Null": {"sts:SourceIdentity": "false"}, "StringEquals": {"sts:ExternalId": "ir-42"}}


def test_irbot_templates_writes_them(tmp_path):
    written = subprocess.run([sys.executable, "-m", "bot.cli", "templates", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.yaml", "member.yaml"]
    assert (tmp_path / "hub.yaml").read_text() == (DEPLOY / "hub.yaml").read_text()


@pytest.fixture
def enforcing(moto_endpoint):
    """moto's IAM enforcement, from the call after on() on (INITIAL_NO_AUTH_ACTION_COUNT 0), off again at the end. The test
    session's moto checks EC2 and IAM calls as AWS does (standins/moto_process.py, standins/moto_authorization.py)."""
    import urllib.request

    def switch(value: str) -> None:
        # text/plain: a form content type would leave moto's request.data empty
        urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset-auth", data=value.encode(), method="POST",
                                                      headers={"Content-Type": "text/plain"})).read()

    class Enforcement:
        on = staticmethod(lambda: switch("0"))
        off = staticmethod(lambda: switch("inf"))

    yield Enforcement
    switch("inf")


def test_collect_and_isolate_succeed_under_enforcement_holding_only_the_deployed_policy_and_a_missing_permission_is_named(
        aws, enforcing, run_irbot, slack, monkeypatch):
    from tests.helpers import CHANNEL, SECOND_RESPONDER, make_world
    from tests.test_organization import NoEvents, approve
    from workers import running

    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="irbot-hub", TemplateBody=(DEPLOY / "hub.yaml").read_text(), Capabilities=["CAPABILITY_NAMED_IAM"])
    world = make_world(bucket=None)  # after the stack: its quarantine policy is the one revoke-key attaches
    boto3.client("iam").create_user(UserName="deploy-bot")
    key = boto3.client("iam").create_access_key(UserName="deploy-bot")["AccessKey"]
    monkeypatch.setattr(running, "EVENT_SOURCE", NoEvents())  # moto lacks LookupEvents (its real client is tested in test_containment)
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName="irbot-hub")["Stacks"][0]["Outputs"]}
    # irbot's credentials: the stack's role, and nothing else (fetched before enforcement: its trust names ECS)
    found = boto3.client("sts").assume_role(RoleArn=outputs["IrbotRoleArn"], RoleSessionName="irbot")["Credentials"]
    as_irbot = {"AWS_ACCESS_KEY_ID": found["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": found["SecretAccessKey"],
                "AWS_SESSION_TOKEN": found["SessionToken"]}
    irbot = run_irbot(IR_EVIDENCE_BUCKET=outputs["EvidenceBucketName"], IR_UNTRACK_PAUSE_SECONDS="0", **as_irbot)
    enforcing.on()
    with pytest.raises(Exception, match="AuthFailure|InvalidClientTokenId|not valid"):  # enforcement is on: unknown keys are refused
        boto3.client("ec2", aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="").describe_instances()

    irbot.command(f"collect {world['instance']}")
    collected = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Evidence from" in m.get("text", "")), None), timeout=60)
    irbot.settle()
    detail = "\n".join(m["text"] for m in [collected, *slack.thread(CHANNEL, collected["ts"])])  # its notes are in its thread
    assert "note" not in collected["text"] and "not collected" not in detail, detail
    for command in (f"isolate {world['instance']}", f"release {world['instance']}", f"revoke-key {key['AccessKeyId']}"):
        _, reply, _ = irbot.command(command)
        done = approve(irbot, slack, reply)
        assert "Done" in done and ":x:" not in done, done
    for command in (f"snapshot {world['instance']}", f"hunt-key {key['AccessKeyId']}"):
        irbot.command(command)
        # its message is posted as Running and redrawn as it ends
        done = slack.wait_for(lambda s: next((text for m in s.top_level(CHANNEL) if f"/ir {command}" in m.get("text", "")
                                              for text in [s.current(CHANNEL, m["ts"])["text"]] if text.startswith("Done")), None), timeout=90)
        irbot.settle()
        message = next(m for m in slack.top_level(CHANNEL) if f"/ir {command}" in m.get("text", ""))
        done += "\n" + "\n".join(m["text"] for m in slack.thread(CHANNEL, message["ts"]))  # each step, in its thread
        # moto checks Lambda's REST signatures wrongly under enforcement (SignatureDoesNotMatch, whatever the policy):
        # hunt-key's Lambda search is the one part that can't pass here; every other part must.
        failed = [line for line in done.splitlines() if ":x:" in line and "couldn't search Lambda functions" not in line]
        assert not failed, done

    # Without one permission, the action that needs it says which (the rest of collect goes on).
    enforcing.off()
    assert boto3.client("iam").list_access_keys(UserName="deploy-bot")["AccessKeyMetadata"][0]["Status"] == "Inactive"
    iam = boto3.client("iam")
    attached = {p["PolicyName"]: p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="irbot")["AttachedPolicies"]}
    for part, name in POLICY_PARTS.items():  # taken out of every managed policy of the role that grants them
        document = policy_document(outputs["EvidenceBucketName"], part=part)
        for statement in document["Statement"]:
            if statement["Sid"] == "AnyResource":
                statement["Action"] = [a for a in statement["Action"] if a not in ("ec2:GetConsoleOutput", "iam:UpdateAccessKey")]
        iam.create_policy_version(PolicyArn=attached[name], PolicyDocument=json.dumps(document), SetAsDefault=True)
    enforcing.on()
    slack.reset()
    irbot.command(f"collect {world['instance']}")
    collected = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if "Evidence from" in m.get("text", "")), None), timeout=60)
    text = json.dumps(slack.wait_for(lambda s: s.thread(CHANNEL, collected["ts"]), timeout=60))  # the note, in its thread
    assert "console-output.txt was not collected" in text and "ec2:GetConsoleOutput" in text, text
    enforcing.off()
    second = boto3.client("iam").create_access_key(UserName="deploy-bot")["AccessKey"]["AccessKeyId"]
    enforcing.on()
    _, reply, _ = irbot.command(f"revoke-key {second}")
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "")), None), timeout=60)
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    ended = slack.wait_for(lambda s: next((t for t in [s.current(CHANNEL, card["ts"])["text"]] if any(w in t.splitlines()[0] for w in ("Done", "Failed", "failed"))), None), timeout=60)
    assert "iam:UpdateAccessKey" in ended, ended  # IAM, another service: the missing permission named too, on the card


def test_irbots_credentials_cannot_change_irbots_own_role_or_user_or_the_break_glass_principals(aws, enforcing):
    """Under enforcement, with moto checking IAM calls against the role, user or policy they name (standins/moto_authorization.py)."""
    from botocore.exceptions import ClientError

    from actions.keys import quarantine_policy
    from bot.policies import Protected
    iam = boto3.client("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                                                                "Action": "sts:AssumeRole"}]})
    for role in ("irbot", "break-glass", "web-app"):
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=trust)
    for user in ("irbot-ci", "breakglass-admin", "deploy-bot"):
        iam.create_user(UserName=user)
    victim_key = iam.create_access_key(UserName="deploy-bot")["AccessKey"]["AccessKeyId"]
    quarantine_arn = iam.create_policy(PolicyName="irbot-quarantine", PolicyDocument=json.dumps(quarantine_policy()))["Policy"]["Arn"]
    glass = ("arn:aws:iam::123456789012:role/break-glass", "arn:aws:iam::123456789012:user/breakglass-admin",
             "arn:aws:iam::123456789012:user/irbot-ci")  # irbot as a user too, where a team runs it with a user's key
    document = policy_document("ir-evidence", protected=Protected(break_glass=glass))
    policy_arn = iam.create_policy(PolicyName="irbot-hub", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="irbot", PolicyArn=policy_arn)
    iam.attach_user_policy(UserName="irbot-ci", PolicyArn=policy_arn)
    found = boto3.client("sts").assume_role(RoleArn="arn:aws:iam::123456789012:role/irbot", RoleSessionName="thief")["Credentials"]
    stolen = boto3.client("iam", aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                          aws_session_token=found["SessionToken"])
    admin = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})

    enforcing.on()
    refused = {
        "PutRolePolicy on irbot": lambda: stolen.put_role_policy(RoleName="irbot", PolicyName="x", PolicyDocument=admin),
        "AttachRolePolicy on irbot": lambda: stolen.attach_role_policy(RoleName="irbot", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
        "UpdateAssumeRolePolicy on irbot": lambda: stolen.update_assume_role_policy(RoleName="irbot", PolicyDocument=trust),
        "PutUserPolicy on irbot's user": lambda: stolen.put_user_policy(UserName="irbot-ci", PolicyName="x", PolicyDocument=admin),
        "CreateAccessKey for irbot's user": lambda: stolen.create_access_key(UserName="irbot-ci"),
        "PutRolePolicy on break-glass": lambda: stolen.put_role_policy(RoleName="break-glass", PolicyName="x", PolicyDocument=admin),
        "PutUserPolicy on the break-glass admin": lambda: stolen.put_user_policy(UserName="breakglass-admin", PolicyName="x", PolicyDocument=admin),
        "CreatePolicyVersion of irbot's policy": lambda: stolen.create_policy_version(PolicyArn=policy_arn, PolicyDocument=admin, SetAsDefault=True),
    }
    for what, attempt in refused.items():
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] == "AccessDenied", what
    # what revoke-key does to a compromised user still works
    stolen.update_access_key(UserName="deploy-bot", AccessKeyId=victim_key, Status="Inactive")
    stolen.attach_user_policy(UserName="deploy-bot", PolicyArn=quarantine_arn)
    enforcing.off()
    assert iam.list_role_policies(RoleName="irbot")["PolicyNames"] == [] and iam.list_user_policies(UserName="breakglass-admin")["PolicyNames"] == []


def test_irbots_credentials_change_only_irbots_groups_quarantined_instances_and_irbots_tags(aws, enforcing):
    """What the scoped statements (actions/scopes.py) leave a thief of irbot's credentials, checked as AWS checks them."""
    from botocore.exceptions import ClientError

    from tests.helpers import make_world

    cfn = boto3.client("cloudformation")
    cfn.create_stack(StackName="irbot-hub", TemplateBody=(DEPLOY / "hub.yaml").read_text(), Capabilities=["CAPABILITY_NAMED_IAM"])
    world = make_world(bucket=None)
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    vpc = ec2.describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["VpcId"]
    web = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["web"]}])["SecurityGroups"][0]["GroupId"]
    iam.create_user(UserName="deploy-bot")
    found = boto3.client("sts").assume_role(RoleArn="arn:aws:iam::123456789012:role/irbot", RoleSessionName="thief")["Credentials"]
    keys = {"aws_access_key_id": found["AccessKeyId"], "aws_secret_access_key": found["SecretAccessKey"], "aws_session_token": found["SessionToken"]}
    stolen_ec2, stolen_iam = boto3.client("ec2", **keys), boto3.client("iam", **keys)
    world_open = [{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    eni = ec2.describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["NetworkInterfaces"][0]["NetworkInterfaceId"]
    association = ec2.describe_iam_instance_profile_associations()["IamInstanceProfileAssociations"][0]["AssociationId"]
    tagged = lambda purpose: [{"ResourceType": "security-group", "Tags": [{"Key": "irbot:purpose", "Value": purpose}]}]  # noqa: E731

    enforcing.on()
    refused = {
        "opening somebody else's group to the world": lambda: stolen_ec2.authorize_security_group_ingress(GroupId=web, IpPermissions=world_open),
        "rewriting an instance's user data": lambda: stolen_ec2.modify_instance_attribute(InstanceId=world["instance"], UserData={"Value": b"evil"}),
        "turning an instance's termination protection off": lambda: stolen_ec2.modify_instance_attribute(
            InstanceId=world["instance"], DisableApiTermination={"Value": False}),
        "taking an instance's profile away": lambda: stolen_ec2.disassociate_iam_instance_profile(AssociationId=association),
        "a tag of its own choosing": lambda: stolen_ec2.create_tags(Resources=[world["instance"]], Tags=[{"Key": "Owner", "Value": "x"}]),
        "making somebody else's group look like irbot's": lambda: stolen_ec2.create_tags(
            Resources=[web], Tags=[{"Key": "irbot:purpose", "Value": "isolation"}]),
        "moving an untagged instance's interface": lambda: stolen_ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[web]),
        "deleting every tag": lambda: stolen_ec2.delete_tags(Resources=[world["instance"]]),
        "a group that is not irbot's": lambda: stolen_ec2.create_security_group(GroupName="backdoor", Description="x", VpcId=vpc),
        "a group pretending a purpose": lambda: stolen_ec2.create_security_group(GroupName="backdoor", Description="x", VpcId=vpc,
                                                                                  TagSpecifications=tagged("backdoor")),
        "attaching an administrator policy": lambda: stolen_iam.attach_user_policy(
            UserName="deploy-bot", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess"),
        "writing a policy onto a user": lambda: stolen_iam.put_user_policy(UserName="deploy-bot", PolicyName="x", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})),
    }
    for what, attempt in refused.items():
        with pytest.raises(ClientError) as denied:
            attempt()
        assert denied.value.response["Error"]["Code"] in ("AccessDenied", "UnauthorizedOperation"), what

    # What isolate does, in its order, works: tag first, then the attributes; irbot's own groups and rules.
    stolen_ec2.create_tags(Resources=[world["instance"]], Tags=[{"Key": "irbot:status", "Value": "quarantine"}])
    stolen_ec2.modify_instance_attribute(InstanceId=world["instance"], DisableApiTermination={"Value": True})
    own = stolen_ec2.create_security_group(GroupName="irbot-isolation-x", Description="x", VpcId=vpc, TagSpecifications=tagged("isolation"))["GroupId"]
    stolen_ec2.authorize_security_group_ingress(GroupId=own, IpPermissions=world_open)
    stolen_ec2.modify_instance_attribute(InstanceId=world["instance"], Groups=[own])
    stolen_iam.attach_user_policy(UserName="deploy-bot", PolicyArn="arn:aws:iam::123456789012:policy/irbot-quarantine")
    enforcing.off()
    assert ec2.describe_instance_attribute(InstanceId=world["instance"], Attribute="disableApiTermination")["DisableApiTermination"]["Value"] is True
    assert [p["PolicyName"] for p in iam.list_attached_user_policies(UserName="deploy-bot")["AttachedPolicies"]] == ["irbot-quarantine"]
