"""/ir prep: readiness checks on moto, a known pass and a known failure each, through the bot; the card within
Slack's limits; the evidence and the latest score kept."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import boto3
import pytest

import actions
from actions import aws as aws_calls, readiness
from actions.context import RunContext
from actions.errors import ActionError
from actions.prep import score
from actions.readiness import Probe, Status, Verdict
from chat import readiness as card_builder
from core.readiness import LATEST_KEY
from core.request import CommandRequest
from tests.helpers import CHANNEL, RESPONDER, amazon_image, make_world
from tests.test_organization import FIRST, OWN, SECOND, TRUST, member_session

GOOD, BAD = FIRST, SECOND
HOSTILE = "<!channel> *bold* <https://evil.example|click>"
LOG_DELIVERY = 'uri="http://acs.amazonaws.com/groups/s3/LogDelivery"'


def good_account(session: boto3.Session) -> str:
    """Everything a check asks for, including what ThreatPrep read the wrong way round (versioning, access logging on)."""
    s3, ct, ec2 = session.client("s3"), session.client("cloudtrail"), session.client("ec2")
    s3.create_bucket(Bucket="good-access-logs")
    s3.put_bucket_acl(Bucket="good-access-logs", GrantWrite=LOG_DELIVERY, GrantReadACP=LOG_DELIVERY)
    for bucket in ("good-access-logs", "good-trail-logs"):
        if bucket != "good-access-logs":
            s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": "good-access-logs", "TargetPrefix": f"{bucket}/"}})
    ct.create_trail(Name="org-trail", S3BucketName="good-trail-logs", IsMultiRegionTrail=True, EnableLogFileValidation=True)
    ct.start_logging(Name="org-trail")
    session.client("guardduty").create_detector(Enable=True)
    session.client("organizations").create_organization(FeatureSet="ALL")
    session.client("guardduty").enable_organization_admin_account(AdminAccountId=OWN)
    session.client("securityhub").enable_security_hub()
    config = session.client("config")
    config.put_configuration_recorder(ConfigurationRecorder={"name": "default", "roleARN": f"arn:aws:iam::{GOOD}:role/config"})
    config.put_delivery_channel(DeliveryChannel={"name": "default", "s3BucketName": "good-trail-logs"})
    config.start_configuration_recorder(ConfigurationRecorderName="default")
    ec2.enable_ebs_encryption_by_default()
    for instance in ec2.describe_instances()["Reservations"][0]["Instances"]:
        ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpTokens="required")
    ec2.create_flow_logs(ResourceIds=[v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]], ResourceType="VPC", TrafficType="ALL",
                         LogDestinationType="s3", LogDestination="arn:aws:s3:::good-access-logs")
    iam = session.client("iam")
    iam.create_user(UserName="alice")
    iam.create_login_profile(UserName="alice", Password="Correct-horse-1!")
    serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="alice")["VirtualMFADevice"]["SerialNumber"]
    iam.enable_mfa_device(UserName="alice", SerialNumber=serial, AuthenticationCode1="123456", AuthenticationCode2="654321")
    session.client("cloudwatch").put_metric_alarm(AlarmName="bill", MetricName="EstimatedCharges", Namespace="AWS/Billing", Statistic="Maximum",
                                                  Period=21600, EvaluationPeriods=1, Threshold=100, ComparisonOperator="GreaterThanThreshold")
    running = ec2.describe_instances()["Reservations"][0]["Instances"][0]
    return running["PrivateIpAddress"]


def bad_account(session: boto3.Session) -> None:
    """One known failure per check."""
    s3, ct, ec2 = session.client("s3"), session.client("cloudtrail"), session.client("ec2")
    s3.create_bucket(Bucket="bad-trail-logs")  # no versioning, no encryption, no logging
    s3.create_bucket(Bucket="bad-public")
    s3.put_bucket_policy(Bucket="bad-public", Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bad-public/*"}]}))
    ct.create_trail(Name="one-region", S3BucketName="bad-trail-logs", IsMultiRegionTrail=False)  # no validation, not started
    session.client("guardduty").create_detector(Enable=False)
    session.client("organizations").create_organization(FeatureSet="ALL")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.create_tags(Resources=[vpc], Tags=[{"Key": "Name", "Value": HOSTILE}])
    # An instance whose host key irbot can't learn (moto's console prints none; known_hosts names the good one alone),
    # allowing IMDSv1 (moto's default, as AWS's).
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    ec2.run_instances(ImageId=amazon_image(ec2), MinCount=1, MaxCount=1, SubnetId=subnet,
                      TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": HOSTILE}]}])
    iam = session.client("iam")
    iam.create_user(UserName="bob")
    iam.create_login_profile(UserName="bob", Password="Correct-horse-1!")


EXPECTED_FAILURES = {"s3-public", "s3-versioning", "s3-encryption", "s3-logging", "trail", "trail-validation",
                     "trail-bucket", "guardduty", "guardduty-admin", "securityhub", "config", "flow-logs", "console-mfa", "ebs-encryption",
                     "imdsv2", "memory-capture", "billing-alarm", "root"}


@pytest.fixture
def prepared(aws, redis_conn, tmp_path):
    make_world()  # irbot's own account: the evidence bucket
    s3 = boto3.client("s3")
    s3.put_object_lock_configuration(Bucket="ir-evidence", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    queue = boto3.client("sqs").create_queue(QueueName="irbot-findings")["QueueUrl"]
    arn = boto3.client("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events = boto3.client("events")
    events.put_rule(Name="irbot-findings", EventPattern=json.dumps({"source": ["aws.guardduty", "aws.securityhub"]}), State="ENABLED")
    events.put_targets(Rule="irbot-findings", Targets=[{"Id": "queue", "Arn": arn}])
    hosts = {}
    for account, build in ((GOOD, good_account), (BAD, bad_account)):
        session = member_session(account)
        make_world(session=session, bucket=None)
        session.client("iam").create_role(RoleName="irbot-responder", AssumeRolePolicyDocument=TRUST)
        hosts[account] = build(session)
    known = tmp_path / "known_hosts"
    known.write_text(f"{hosts[GOOD]} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    return {"queue": queue, "known_hosts": str(known)}


def verdicts_of(prep_json: dict, account: str) -> dict[str, str]:
    return {v["check"]: v["status"] for v in prep_json["verdicts"] if v["account"] == account}


def test_prep_gives_each_check_its_known_verdict_and_keeps_the_evidence(run_irbot, prepared, slack, redis_conn):
    irbot = run_irbot(IR_ACCOUNTS=f"{GOOD},{SECOND}", IR_FINDINGS_QUEUE_URL=prepared["queue"], IR_SSH_KNOWN_HOSTS=prepared["known_hosts"])
    _, reply, _ = irbot.command("prep --account all")
    assert "`/ir prep --account all`" in reply["text"]
    irbot.settle()
    first = next(m for m in slack.messages(CHANNEL) if "/ir prep" in m.get("text", ""))
    card = slack.current(CHANNEL, first["ts"])
    thread = json.dumps(slack.thread(CHANNEL, first["ts"]))
    latest = json.loads(redis_conn.get(LATEST_KEY))
    bucket, key = latest["evidence"].removeprefix("s3://").split("/", 1)
    stored = boto3.client("s3").get_object(Bucket=bucket, Key=key)
    body = stored["Body"].read()
    import hashlib
    assert stored["Metadata"]["sha256"] == hashlib.sha256(body).hexdigest()
    prep_json = json.loads(body)
    good, bad = verdicts_of(prep_json, GOOD), verdicts_of(prep_json, BAD)
    # moto's root user never has MFA, so root fails everywhere here (its pass is shown with AWS's answer below).
    assert {c for c, s in good.items() if s == "failed"} == {"root"}, good
    # S3 Control puts the account ID in the host name, which moto's server behind 127.0.0.1 can't be: the real client's
    # failure is "couldn't check" with its sentence (its pass and failure are shown with AWS's answers below).
    assert good["s3-account-block"] == bad["s3-account-block"] == "couldn't check"
    assert {c for c, s in good.items() if s == "couldn't check"} == {"s3-account-block"}, _debug(prep_json)
    assert {c for c, s in bad.items() if s == "failed"} == EXPECTED_FAILURES, bad
    assert set(good) - {"guardduty-admin"} <= set(bad)
    own = {v["check"]: v["status"] for v in prep_json["verdicts"] if v["account"] == OWN and v["region"] == ""}
    assert own["evidence-lock"] == own["findings-rule"] == own["responder-role"] == "passed"
    # The ThreatPrep-inverted cases: versioning and access logging on, trail validation on, all pass.
    assert good["s3-versioning"] == good["s3-logging"] == good["trail-validation"] == "passed"
    # The score: checks that passed everywhere they ran.
    assert latest["score"] == prep_json["score"] and latest["total"] == prep_json["total"] and set(latest["failed"]) == set(prep_json["failed"])
    assert f"Readiness {latest['score']}% ({latest['passed']} of {latest['total']} checks pass)" in card["text"]
    drawn = json.dumps(card["blocks"])
    assert len(card["blocks"]) <= 50 and all(len(b.get("text", {}).get("text", "")) <= 3000 for b in card["blocks"])
    assert "<!channel>" not in drawn + thread and "&lt;!channel&gt;" in drawn + thread
    assert "_Fix_" in drawn


def declared() -> boto3.Session:
    return aws_calls.declare(boto3.Session(), actions.get("prep").declaration)


def probe(session=None, *, now=None, **context) -> Probe:
    return Probe(session or declared(), "123456789012", "us-east-1", RunContext(account="123456789012", **context),
                 now or datetime.now(timezone.utc))


def test_old_and_unused_credentials_fail_and_fresh_ones_pass(aws):
    iam = boto3.client("iam")
    iam.create_user(UserName="carol")
    iam.create_access_key(UserName="carol")
    iam.create_login_profile(UserName="carol", Password="Correct-horse-1!")
    for name in ("key-age", "unused-credentials"):
        check = readiness.CHECKS[name]
        assert check.run(probe()).status is Status.PASSED
        later = check.run(probe(now=datetime.now(timezone.utc) + timedelta(days=120)))
        assert later.status is Status.FAILED and "carol" in " ".join(later.offenders)


class OK:
    status_code = 200


class Answers:
    """A client answering one call as AWS does where moto can't (the root user's MFA, AWS's managed policies)."""

    def __init__(self, **answers):
        self.answers = answers

    def __getattr__(self, operation):
        answer = self.answers[operation]
        if isinstance(answer, Exception):
            def refuse(**_):
                raise answer
            return refuse
        return lambda **_: dict(answer)


class AnsweringProbe(Probe):
    def client(self, service, region=None):
        return self.context.events[service]


def answering(**clients) -> Probe:
    return AnsweringProbe(None, "123456789012", "us-east-1", RunContext(account="123456789012", events=clients), datetime.now(timezone.utc))


def test_root_and_directly_attached_administrators_as_aws_answers():
    root = readiness.CHECKS["root"].run
    ok = {"SummaryMap": {"AccountMFAEnabled": 1, "AccountAccessKeysPresent": 0}}
    keys = {"SummaryMap": {"AccountMFAEnabled": 1, "AccountAccessKeysPresent": 1}}
    assert root(answering(iam=Answers(get_account_summary=ok))).status is Status.PASSED
    assert root(answering(iam=Answers(get_account_summary=keys))).found == "root has access keys"


def test_account_block_public_access_as_aws_answers():
    block = readiness.CHECKS["s3-account-block"].run
    on = {"PublicAccessBlockConfiguration": dict.fromkeys(("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True)}
    half = {"PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "IgnorePublicAcls": True}}
    assert block(answering(s3control=Answers(get_public_access_block=on))).status is Status.PASSED
    assert block(answering(s3control=Answers(get_public_access_block=half))).offenders == ["BlockPublicPolicy", "RestrictPublicBuckets"]
    missing = ActionError("no configuration", code="NoSuchPublicAccessBlockConfiguration")
    assert block(answering(s3control=Answers(get_public_access_block=missing))).status is Status.FAILED


def test_admin_attached_directly_fails_and_a_lookalike_does_not(aws):
    iam = boto3.client("iam")
    iam.create_user(UserName="dave")
    lookalike = iam.create_policy(PolicyName="AdministratorAccess", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="dave", PolicyArn=lookalike)
    check = readiness.CHECKS["admin-users"].run
    assert check(probe()).status is Status.PASSED  # a customer's policy of that name is not AWS's
    attached = {"AttachedPolicies": [{"PolicyName": "AdministratorAccess", "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}]}
    # moto's IAM can't attach AWS's managed policies: the real client against moto, with AWS's answer to this one call.
    real = aws_calls.client(declared(), "iam", "us-east-1")
    real.meta.events.register("before-call.iam.ListAttachedUserPolicies", lambda **_: (OK, attached | {"IsTruncated": False}))
    verdict = check(AnsweringProbe(None, "123456789012", "us-east-1", RunContext(events={"iam": real}), datetime.now(timezone.utc)))
    assert verdict.status is Status.FAILED and verdict.offenders == ["dave"]


def test_irbot_itself_fails_without_lock_queue_or_a_way_in(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="no-lock")
    lock = readiness.CHECKS["evidence-lock"].run(probe(evidence_bucket="no-lock", evidence_lock=lambda: {}))
    assert lock.status is Status.FAILED and "no Object Lock" in lock.found
    assert readiness.CHECKS["findings-rule"].run(probe()).status is Status.FAILED

    def refused(account):
        raise ActionError("irbot could not assume arn:aws:iam::111111111111:role/irbot-responder", code="AccessDenied")

    shut = readiness.CHECKS["responder-role"].run(probe(allowed_accounts=lambda: ("123456789012", FIRST), session_in=refused,
                                                         own_account="123456789012"))
    assert shut.status is Status.FAILED and shut.offenders == [f"{FIRST}: access denied by policy"]


def test_a_check_aws_refuses_is_couldnt_check_with_the_reason(aws, monkeypatch):
    """The real client against moto's server, a bucket S3 won't describe: a sentence, never a pass."""
    from actions.prep import prep
    from actions.steps import StepLog

    boto3.client("s3").create_bucket(Bucket="ir-evidence")
    boto3.client("s3").put_bucket_versioning(Bucket="ir-evidence", VersioningConfiguration={"Status": "Enabled"})
    check = readiness.CHECKS["s3-versioning"]
    broken = replace(check, run=lambda p: (_ for _ in ()).throw(ActionError("AWS refused s3:GetBucketVersioning (AccessDenied).", code="AccessDenied")))
    monkeypatch.setitem(readiness.CHECKS, "s3-versioning", broken)
    result = prep(declared(), "", "us-east-1", context=RunContext(account="123456789012", own_account="123456789012"), steps=StepLog())
    entry = next(e for e in result.facts["readiness"]["checks"] if e["name"] == "s3-versioning")
    assert entry["status"] == "couldn't check" and "AccessDenied" in entry["found"]
    assert "s3-versioning" in result.facts["readiness"]["unknown"]
    assert result.facts["readiness"]["score"] < 100


def test_the_card_fits_slacks_limits_however_large_the_world():
    names = list(readiness.CHECKS)
    regions = [f"r-{i}" for i in range(17)]
    verdicts = [Verdict(Status.FAILED, f"{HOSTILE} found", [f"{HOSTILE}-{n}" for n in range(5)], 35, check=name, account=f"{a:012d}", region=r)
                for name in names for a in range(20) for r in regions]
    report = score(verdicts, many_accounts=True) | {"regions": regions}
    request = CommandRequest("prep", (), {"accounts": "all", "regions": "all", "region": "us-east-1"}, RESPONDER, CHANNEL)
    for text, blocks in (card_builder.card(request, report, "us-east-1", None), card_builder.detail(report, [])):
        assert len(blocks) <= 50 and len(text) <= 3000
        for block in blocks:
            for part in [block.get("text", {})] + block.get("elements", []):
                assert len(part.get("text", "")) <= 3000
        assert "<!channel>" not in json.dumps(blocks) and "<!channel>" not in text
    entry = report["checks"][0]
    assert len(entry["offenders"]) == 5 and entry["more"] == 20 * 17 * 40 - 5
    assert report["score"] == 0 and report["total"] == len(names)


def _debug(prep_json):
    return [v for v in prep_json["verdicts"] if v["status"] != "passed" and v["account"] == GOOD]
