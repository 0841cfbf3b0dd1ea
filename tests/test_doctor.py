"""irbot doctor on real parts: redis-server (with and without its append-only file), moto's server (a bucket with and
without Object Lock, a queue with and without a dead-letter queue, member accounts) and the fake Slack (a token with
every scope of manifest.yml, and one without pins:write). IAM's policy simulator is the one part moto lacks: the
real client meets moto once (a note, not a failure), and a stand-in answers in one test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

from bot.doctor import BOT_SCOPES, FAIL, NOTE, PASS, check_accounts, check_permissions, check_redis
from core.settings import load
from tests.conftest import AWS_ENV, redis_server
from tests.helpers import BOT_TOKEN, SIGNING_SECRET, irbot_variables

IRBOT = str(Path(sys.executable).with_name("irbot"))
ROOT = Path(__file__).resolve().parent.parent
FIRST, SECOND = "111111111111", "222222222222"


@pytest.fixture(scope="module")
def durable_redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis-aof"), "--appendonly", "yes", "--appendfsync", "everysec") as url:
        yield url


def doctor(env: dict) -> tuple[int, dict[str, str], str]:
    """Runs `irbot doctor`; returns its exit status, its lines by check name, and everything it printed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_", "REDIS_", "PORT"))}
    result = subprocess.run([IRBOT, "doctor"], env={**base, **env}, capture_output=True, text=True, timeout=120)
    lines = {}
    for line in result.stdout.splitlines():
        status, check, text = line.split(None, 2)
        lines[check] = f"{status} {text}"
    return result.returncode, lines, result.stdout + result.stderr


def environment(aws: str, slack, redis_url: str, **more: str) -> dict[str, str]:
    return {**AWS_ENV, "AWS_ENDPOINT_URL": aws, **irbot_variables(slack.api_url, redis_url), **more}


def findings_queue(*, dead_letters: bool) -> str:
    sqs = boto3.client("sqs")
    attributes = {}
    if dead_letters:
        dlq = sqs.create_queue(QueueName="irbot-findings-dlq")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
    return sqs.create_queue(QueueName="irbot-findings", Attributes=attributes)["QueueUrl"]


def test_the_doctors_scopes_are_the_manifests():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    assert sorted(BOT_SCOPES) == sorted(manifest["oauth_config"]["scopes"]["bot"])


def test_a_healthy_deployment_passes_every_check(aws, slack, durable_redis_url):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="ir-evidence", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(Bucket="ir-evidence", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    queue = findings_queue(dead_letters=True)
    slack.scopes = BOT_SCOPES

    status, lines, printed = doctor(environment(aws, slack, durable_redis_url, IR_FINDINGS_QUEUE_URL=queue, IR_ACCOUNTS=f"{FIRST},{SECOND}"))

    assert status == 0, printed
    assert lines["slack"].startswith("pass token valid (irbot in irbot test), with all 9 bot scopes")
    assert lines["redis"].startswith("pass reachable at 127.0.0.1:") and "appendonly yes, appendfsync everysec" in lines["redis"]
    assert lines["evidence"] == "pass bucket ir-evidence has Object Lock; irbot writes evidence in COMPLIANCE mode for 90 days."
    assert lines["findings"].startswith(f"pass queue {queue} present, dead-letter queue ") and lines["findings"].endswith("irbot-findings-dlq.")
    # moto has no policy simulator: the real client meets its HTTP 500 and says so, without failing the run
    assert lines["permissions"].startswith("note could not simulate the policy of arn:aws:sts::123456789012:user/moto "
                                           "(IAM's policy simulator is not available at this endpoint)")
    assert lines["accounts"] == f"pass assumed irbot-responder in {FIRST}, {SECOND}."
    assert BOT_TOKEN not in printed and SIGNING_SECRET not in printed and "Traceback" not in printed


def test_a_broken_deployment_names_each_failure_and_exits_1(aws, slack, redis_url):
    boto3.client("s3").create_bucket(Bucket="ir-evidence")  # no Object Lock
    queue = findings_queue(dead_letters=False)
    slack.scopes = tuple(s for s in BOT_SCOPES if s != "pins:write")

    status, lines, printed = doctor(environment(aws, slack, redis_url, IR_FINDINGS_QUEUE_URL=queue))  # the suite's Redis: appendonly no

    assert status == 1, printed
    assert lines["slack"].startswith("FAIL token valid (irbot in irbot test), but it lacks the scopes pins:write: add them")
    assert lines["redis"].startswith("FAIL reachable at 127.0.0.1:") and "not durable (appendonly no)" in lines["redis"]
    assert lines["evidence"].startswith("FAIL bucket ir-evidence has no Object Lock, so its evidence can be changed or deleted: turn it on")
    assert lines["findings"].startswith(f"FAIL queue {queue} has no dead-letter queue")
    assert lines["accounts"] == "pass irbot acts in its own account 123456789012 only (IR_ACCOUNTS names no other)."
    assert BOT_TOKEN not in printed and "Traceback" not in printed


def test_what_is_missing_or_refused_is_a_failed_line_and_a_malformed_variable_one_sentence(aws, slack, redis_url):
    slack.scopes = BOT_SCOPES
    env = environment(aws, slack, "redis://:s3cretpass@127.0.0.1:1/0", SLACK_BOT_TOKEN="xoxb-not-the-token", IR_EVIDENCE_BUCKET="nowhere")
    status, lines, printed = doctor(env)
    assert status == 1
    assert lines["slack"].startswith("FAIL Slack refused the token (invalid_auth)")
    assert lines["redis"].startswith("FAIL cannot reach Redis at 127.0.0.1:1 (ConnectionError)")
    assert lines["evidence"].startswith("FAIL The evidence bucket nowhere does not exist (IR_EVIDENCE_BUCKET)")
    assert lines["findings"].startswith("note IR_FINDINGS_QUEUE_URL is not set")
    assert "s3cretpass" not in printed and "xoxb-not-the-token" not in printed

    result = subprocess.run([IRBOT, "doctor"], env={**os.environ, **env, "IR_EVIDENCE_LOCK_MODE": "LEGAL"}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "irbot: IR_EVIDENCE_LOCK_MODE is malformed: it should hold COMPLIANCE or GOVERNANCE.\n"


class StandInSimulator:
    """IAM's policy simulator as a test wants it: these actions denied, everything else allowed."""

    def __init__(self, denied: set[str]):
        self.refused, self.asked = denied, []

    def denied(self, principal: str, names: list[str], resources=None, context=None) -> list[str]:
        self.asked.append((principal, names, resources, context))
        return sorted(set(names) & self.refused)


def test_permissions_missing_from_irbots_principal_are_named(aws):
    settings = load(os.environ)
    simulator = StandInSimulator({"ec2:StopInstances", "iam:UpdateAccessKey"})
    result = check_permissions(settings, boto3.Session(), simulator)
    assert result.status == FAIL
    assert result.text == ("arn:aws:iam::123456789012:user/moto is not allowed ec2:StopInstances, iam:UpdateAccessKey: "
                           "give it the policy `irbot iam-policy` prints.")
    (principal, names, resources, context), *scoped = simulator.asked
    assert principal == "arn:aws:iam::123456789012:user/moto" and "ec2:DescribeInstances" in names and resources is None
    # a call allowed only on irbot's own resources is asked about one such resource, with the tag that makes it irbot's
    quarantined = next(ask for ask in scoped if "ec2:DisassociateIamInstanceProfile" in ask[1])
    assert quarantined[2] == ["arn:aws:ec2:us-east-1:123456789012:instance/irbot-doctor"]
    assert quarantined[3] == [{"ContextKeyName": "aws:ResourceTag/irbot:status", "ContextKeyValues": ["quarantine"], "ContextKeyType": "string"}]
    attach = next(ask for ask in scoped if ask[1] == ["iam:AttachUserPolicy"])
    assert attach[3][0]["ContextKeyValues"] == ["arn:aws:iam::123456789012:policy/irbot-quarantine"]
    assert check_permissions(settings, boto3.Session(), StandInSimulator(set())).status == PASS


def test_org_lists_the_organizations_accounts_and_assumes_the_role_in_each(aws):
    organizations = boto3.client("organizations")
    organizations.create_organization(FeatureSet="ALL")
    made = sorted(organizations.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]["AccountId"]
                  for name in ("web", "data"))
    result = check_accounts(load({**os.environ, "IR_ACCOUNTS": "org"}), boto3.Session())
    assert result.status == PASS
    assert result.text == f"org lists {', '.join(made)}; assumed irbot-responder in {', '.join(made)}."


def test_redis_with_config_disabled_is_a_note_not_a_failure(tmp_path):
    with redis_server(tmp_path, "--rename-command", "CONFIG", "") as url:
        result = check_redis(load({"REDIS_URL": url}))
    assert result.status == NOTE
    assert result.text.startswith(f"reachable at {url.split('/')[2]}; CONFIG is disabled there")
