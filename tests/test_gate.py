"""The worker-side half of the two-person rule: jobs refuse to change AWS without a valid approval."""

from __future__ import annotations

import boto3
from slack_sdk import WebClient

from tests.helpers import BOT_TOKEN, CHANNEL, RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER
from core.approvals import ApprovalBook, approvals_key, request_key
from core.audit import AuditTrail
from chat.directory import GroupMembers
from workers.jobs import execute_request, run_command
from core.request import CommandRequest


def stop_request(instance_id: str, **options) -> CommandRequest:
    return CommandRequest(command="stop", targets=(instance_id,), options=options, user_id=RESPONDER, channel_id=CHANNEL, incident=CHANNEL)


def state(instance_id: str) -> str:
    return boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def book(redis_conn, **kwargs) -> ApprovalBook:
    options = dict(responders={RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER}, approvers={SECOND_RESPONDER})
    options.update(kwargs)
    return ApprovalBook(redis_conn, AuditTrail(redis_conn), **options)


def test_a_changing_action_queued_without_the_gate_is_refused_by_the_worker(irbot_env, world, slack, redis_conn):
    outcome = run_command(stop_request(world["instance"]).to_dict())
    assert outcome["ok"] is False and "needs approval by a second person; it was not run" in outcome["error"]
    assert state(world["instance"]) == "running"
    assert "job.refused" in [r["action"] for r in AuditTrail(redis_conn).records()]


def test_an_unapproved_request_is_not_executed(irbot_env, world, slack, redis_conn):
    request = stop_request(world["instance"])
    gate = book(redis_conn)
    gate.open(request)
    gate.plan_ready(request.id, [])
    outcome = execute_request(request.id)
    assert outcome["ok"] is False and outcome["state"] == "pending"
    assert state(world["instance"]) == "running"


def test_an_approval_forged_in_redis_by_the_requester_does_not_run(irbot_env, world, slack, redis_conn):
    request = stop_request(world["instance"])
    gate = book(redis_conn)
    gate.open(request)
    gate.plan_ready(request.id, [])
    # Someone with Redis access marks it approved by the requester themself.
    redis_conn.hset(approvals_key(request.id), RESPONDER, 1)
    redis_conn.hset(request_key(request.id), "state", "approved")
    outcome = execute_request(request.id)
    assert outcome["ok"] is False and "do not satisfy the two-person rule" in outcome["error"]
    assert state(world["instance"]) == "running"
    assert gate.get(request.id).state == "failed"


def test_members_of_the_approver_group_may_approve_and_the_group_fails_closed(redis_conn, slack):
    slack.usergroups["S0APPROVE"] = {"handle": "ir-approvers", "users": [THIRD_RESPONDER]}
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    gate = book(redis_conn, approvers=set(), group_members=GroupMembers(client, "ir-approvers"))

    request = stop_request("i-0123456789abcdef0")
    gate.open(request)
    gate.plan_ready(request.id, [])
    refused = gate.approve(request.id, SECOND_RESPONDER)
    assert not refused.ok and "Only irbot's approvers" in refused.reason
    assert gate.approve(request.id, THIRD_RESPONDER).state == "approved"

    unreadable = book(redis_conn, approvers=set(), group_members=GroupMembers(client, "no-such-group"))
    other = stop_request("i-0123456789abcdef0")
    unreadable.open(other)
    unreadable.plan_ready(other.id, [])
    assert not unreadable.approve(other.id, THIRD_RESPONDER).ok


def test_a_skewed_host_clock_does_not_move_the_approval_window(redis_conn, monkeypatch):
    """Every time is Redis's: a host an hour behind neither expires requests early nor keeps them late."""
    import time

    gate = book(redis_conn, expiry_seconds=60)
    request = stop_request("i-0123456789abcdef0")
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - 3600)  # this host's clock is an hour behind
    gate.open(request)
    gate.plan_ready(request.id, [])
    assert gate.expire(request.id).reason == "not due yet"
    assert gate.approve(request.id, SECOND_RESPONDER).state == "approved"
    late = stop_request("i-0123456789abcdef0")
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # and now an hour ahead
    gate.open(late)
    gate.plan_ready(late.id, [])
    assert gate.get(late.id).expires_at < real() + 120
