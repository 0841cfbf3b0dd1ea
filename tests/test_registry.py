"""The registry's contract, the step and change helpers, and the permission check every AWS call goes through."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import time

import boto3
import pytest

import actions
from actions import aws
from actions.aws import Declaration, UndeclaredCall
from actions.changes import change
from actions.errors import ActionError
from actions.registry import TARGETS, Need, Risk
from actions.steps import Outcome, StepLog
from bot.grammar import SPECS, help_text, parse


@pytest.fixture
def moto_aws(aws):
    """The simulated account (the ``aws`` fixture), under a name that leaves ``aws`` to the module."""
    return aws


def test_every_action_has_one_signature_and_a_whole_declaration():
    for spec in actions.REGISTRY.values():
        params = inspect.signature(spec.run).parameters
        assert list(params)[:3] in (["session", "instance_id", "region"], ["session", "key_id", "region"], ["session", "target", "region"])
        assert params["context"].kind is inspect.Parameter.KEYWORD_ONLY and params["context"].default is inspect.Parameter.empty
        assert params["steps"].kind is inspect.Parameter.KEYWORD_ONLY and params["dry_run"].default is False
        # Every declared option is a keyword of the function, and nothing else is asked of the caller.
        for option in spec.extra_options:
            assert option.key in params, f"{spec.name} declares {option.name} but does not take it"
        assert (spec.target in TARGETS or spec.target is None) and spec.summary.endswith(".") and spec.permissions  # None: the account itself
        assert all(":" in p for p in spec.permissions)


def test_the_grammar_and_help_come_from_the_declarations():
    for spec in actions.REGISTRY.values():
        usage = SPECS[spec.name].usage
        assert all(option.name in usage for option in spec.options)
        assert ("--dry-run" in usage) is (spec.risk is Risk.CHANGE)
        assert spec.summary[1:20] in help_text()
    assert parse("snapshot i-0123456789abcdef0 --copy-to-kms alias/ir").options == {"copy_to_kms": "alias/ir"}


def test_what_an_action_needs_and_makes_is_declared():
    assert Need.RECORD in actions.get("release").needs and Need.EVENTS in actions.get("hunt-key").needs
    assert actions.get("compromise").state_for({"stop": True}) == "isolated + snapshotted + stopped"
    assert actions.get("memory").fan_out and actions.get("stop").loses_memory


def test_compromise_declares_everything_its_parts_call():
    parts = {p for name in ("collect", "isolate", "snapshot", "memory", "stop") for p in actions.get(name).permissions}
    assert parts <= set(actions.get("compromise").permissions)


def test_a_change_looks_first_and_records_one_step_of_each_kind():
    steps, done = StepLog(), []
    assert change(steps, "a", "A", dry_run=False, already=lambda: "so", plan="", do=lambda: done.append(1)) is Outcome.ALREADY
    assert change(steps, "b", "B", dry_run=True, already=lambda: None, plan="would", do=lambda: done.append(1)) is Outcome.PLANNED
    assert change(steps, "c", "C", dry_run=False, already=lambda: None, plan="", do=lambda: "made") is Outcome.DONE
    assert change(steps, "d", "D", dry_run=False, skip=lambda: "n/a", already=lambda: None, plan="", do=lambda: done.append(1)) is Outcome.SKIPPED
    assert change(steps, "e", "E", dry_run=False, impossible=lambda: "gone", already=lambda: None, plan="", do=lambda: done.append(1)) is Outcome.FAILED

    def refused():
        raise ActionError("AWS refused", code="UnauthorizedOperation")

    assert change(steps, "f", "F", dry_run=False, already=lambda: None, plan="", do=refused) is Outcome.FAILED
    assert done == [] and [s.detail for s in steps.steps] == ["so", "would", "made", "n/a", "gone", "AWS refused"]
    assert [s.name for s in steps.failed] == ["e", "f"]


def test_an_aws_error_carries_its_code_as_data(moto_aws):
    ec2 = aws.client(aws.declare(boto3.Session(), Declaration("test", frozenset({"ec2:DescribeInstances"}))), "ec2", "us-east-1")
    with pytest.raises(ActionError) as caught:
        aws.call(ec2, "describe_instances", InstanceIds=["i-0123456789abcdef0"])
    assert caught.value.code == "InvalidInstanceID.NotFound" and "NotFound" in str(caught.value)


def test_an_undeclared_call_is_refused_and_noted_when_the_check_is_on(moto_aws, tmp_path, monkeypatch):
    noted = tmp_path / "calls.jsonl"
    monkeypatch.setenv(aws.CHECK_VARIABLE, str(noted))
    session = aws.declare(boto3.Session(), Declaration("action test", frozenset({"ec2:DescribeInstances"})))
    ec2 = aws.client(session, "ec2", "us-east-1")
    aws.call(ec2, "describe_instances")  # declared: fine
    with pytest.raises(UndeclaredCall, match="action test called ec2:DescribeVolumes"):
        aws.call(ec2, "describe_volumes")
    # S3's operations are checked under their IAM names.
    s3 = aws.client(boto3.Session(), "s3", "us-east-1", declared=Declaration("store", frozenset({"s3:ListBucket"})))
    with pytest.raises(UndeclaredCall, match="s3:ListBucketVersions"):
        s3.list_object_versions(Bucket="nothing")
    # A client from a session nobody declared is refused too.
    with pytest.raises(UndeclaredCall, match="no declaration"):
        aws.client(boto3.Session(), "iam", "us-east-1").list_users()
    assert [json.loads(line)["call"] for line in noted.read_text().splitlines()] == ["ec2:DescribeVolumes", "s3:ListBucketVersions", "iam:ListUsers"]


def test_iam_policy_prints_one_process_or_one_action():
    from bot.policies import policy_document

    isolate = policy_document("ir-evidence", action="isolate")
    assert [s["Sid"] for s in isolate["Statement"]] == ["AnyResource", "QuarantinedInstances", "WhatAnInstanceHas", "OwnGroupRules",
                                                        "OwnGroupRuleIds", "NewOwnGroups", "GroupsInAnyVpc", "TagsAtCreation",
                                                        "OwnTags", "NoEscalation"]
    assert "iam:Get*" in isolate["Statement"][0]["Action"]  # its iam:GetRole, as IAM's read wildcard
    findings = policy_document("ir-evidence", process="findings")
    assert {a for s in findings["Statement"] for a in s["Action"]} == {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                                                      "sqs:GetQueueUrl", "sqs:SendMessage"}
    worker = policy_document("ir-evidence", process="worker")
    evidence = next(s for s in worker["Statement"] if s["Sid"] == "Evidence")
    assert "s3:PutObject" in evidence["Action"] and not any(a.startswith("sqs:") for s in worker["Statement"] for a in s["Action"])


def test_an_unreachable_redis_gets_a_sentence_not_an_error_from_the_middleware_and_error_handler(irbot_env, slack):
    """The bot's shared listener code: the responder check as middleware, Redis errors in one handler."""
    from slack_bolt.request import BoltRequest

    from bot.app import create_app
    from core.queues import connect
    from core.settings import load
    from tests.helpers import OUTSIDER, RESPONDER, SECOND_RESPONDER, signed_headers, slash_command
    from tests.processes import block_action

    app = create_app(load(os.environ, "serve"), connect("redis://127.0.0.1:9/0"))  # nothing listens there

    def send(body: str):
        return app.dispatch(BoltRequest(body=body, headers={k.lower(): [v] for k, v in signed_headers(body).items()}))

    answer = send(slash_command("collect i-0123456789abcdef0"))
    assert answer.status == 200 and "could not reach its job queue (Redis)" in json.loads(answer.body)["text"]
    refused = send(slash_command("collect i-0123456789abcdef0", user=OUTSIDER))  # the middleware answers before Redis is needed
    assert refused.status == 200 and "not on irbot's responder list" in json.loads(refused.body)["text"]
    assert "Commands" in json.loads(send(slash_command("help", user=OUTSIDER)).body)["text"]
    clicked = send(block_action(SECOND_RESPONDER, "ir_approve", "0123456789ab"))
    assert clicked.status == 200
    slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert "could not reach its state store (Redis); nothing was decided" in slack.ephemerals(SECOND_RESPONDER)[0]
    assert slack.ephemerals(RESPONDER) == []


def test_with_no_worker_alive_the_requester_is_told_and_a_late_worker_expires_what_is_overdue_first(irbot_env, world, slack, redis_conn, monkeypatch):
    from slack_bolt.request import BoltRequest

    from bot.app import create_app
    from core.queues import connect
    from core.settings import load
    from tests.helpers import CHANNEL, signed_headers, slash_command
    from tests.processes import IRBOT

    monkeypatch.setenv("IR_APPROVAL_EXPIRY_SECONDS", "1")
    app = create_app(load(os.environ, "serve"), connect(irbot_env["REDIS_URL"]))  # the bot alone: no worker runs

    def command(text: str) -> str:
        body = slash_command(text)
        return json.loads(app.dispatch(BoltRequest(body=body, headers={k.lower(): [v] for k, v in signed_headers(body).items()})).body)["text"]

    isolate, collect = command(f"isolate {world['instance']}"), command(f"collect {world['instance']}")
    assert "no worker is running right now" in isolate and "no worker is running right now" in collect
    time.sleep(1.5)  # the isolate's approval window closes while nobody could even see its plan

    env = {**os.environ, **irbot_env}
    started = subprocess.run([IRBOT, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    posts = [m["text"] for m in slack.messages(CHANNEL)]
    expired = next(i for i, t in enumerate(posts) if "Expired unapproved" in t)
    resumed = next(i for i, t in enumerate(posts) if t.startswith("A worker is running again"))
    evidence = next(i for i, t in enumerate(posts) if t.startswith("Evidence from"))
    assert expired < resumed < evidence  # overdue first, then the news, then the work
    assert f"`/ir collect {world['instance']}`" in posts[resumed] and "isolate" not in posts[resumed]
    assert redis_conn.hlen("irbot:waiting-for-a-worker") == 0
    assert boto3.client("ec2").describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
    assert not any("Approval needed" in t for t in posts)  # an expired request never shows buttons


def test_interaction_bodies_of_the_wrong_shape_are_answered_not_crashed_on(irbot_env, slack):
    from urllib.parse import urlencode

    from slack_bolt.request import BoltRequest

    from bot.app import create_app
    from core.queues import connect
    from core.settings import load
    from tests.helpers import signed_headers

    app = create_app(load(os.environ, "serve"), connect(irbot_env["REDIS_URL"]))
    for payload in ({"type": "block_actions", "user": "U0ALICE01", "actions": "approve", "channel": ["C0INCIDENT"]},
                    {"type": "block_actions", "user": {"id": 7}, "actions": [{"action_id": "ir_request_isolate", "value": 12}]},
                    {"type": "block_actions", "user": {"id": "U0ALICE01"}, "actions": [{"action_id": "ir_request_isolate", "value": "[1]"}]},
                    {"type": "block_actions", "user": {"id": "U0ALICE01"}, "actions": [{"action_id": "ir_approve", "value": {"x": 1}}]}):
        body = urlencode({"payload": json.dumps(payload)})
        answer = app.dispatch(BoltRequest(body=body, headers={k.lower(): [v] for k, v in signed_headers(body).items()}))
        assert answer.status in (200, 404), (payload, answer.status)


def test_the_bot_may_read_the_sealed_audit_head_and_nothing_else():
    from bot.policies import policy_document

    serve = policy_document("ir-evidence", process="serve")
    assert serve["Statement"] == [# which account a key belongs to, for revoke-key's plan (no switch into any account)
                                  {"Sid": "AnyResource", "Effect": "Allow", "Action": ["sts:GetAccessKeyInfo"], "Resource": "*"},
                                  {"Sid": "Evidence", "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                                   "Resource": ["arn:aws:s3:::ir-evidence", "arn:aws:s3:::ir-evidence/*"]}]


def test_an_interface_is_never_left_allow_all_when_the_move_out_keeps_failing(monkeypatch):
    """Isolate's fail-closed fallback: the isolation group again and again, then the original groups, then a sentence."""
    from actions import isolate

    monkeypatch.setattr(isolate, "LEAVE_ALLOW_ALL_PAUSES", (0, 0, 0))
    groups, eni, moves = {"isolation": "sg-iso", "untrack": "sg-all"}, {"id": "eni-1", "groups": ["sg-web"]}, []

    def flaky(failures: int):
        def set_groups(ec2, instance_id, interface, wanted):
            moves.append(wanted)
            if len(moves) <= failures:
                raise ActionError("AWS kept throttling ec2:ModifyInstanceAttribute", code="RequestLimitExceeded")
        return set_groups

    monkeypatch.setattr(isolate, "set_interface_groups", flaky(2))
    assert isolate._leave_allow_all(None, "i-1", eni, groups) == (True, "a later try moved eni-1 to the isolation group")
    assert moves == [["sg-iso"]] * 3
    moves.clear()
    monkeypatch.setattr(isolate, "set_interface_groups", flaky(3))
    isolated, sentence = isolate._leave_allow_all(None, "i-1", eni, groups)
    assert not isolated and "back in its own groups (sg-web), NOT isolated" in sentence
    moves.clear()
    monkeypatch.setattr(isolate, "set_interface_groups", flaky(4))
    isolated, sentence = isolate._leave_allow_all(None, "i-1", eni, groups)
    assert not isolated and "may still be in the allow-all group sg-all: move it out by hand now" in sentence
