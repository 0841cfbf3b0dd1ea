"""irbot's Home tab: what a responder sees on opening it (incidents, approvals, findings, the organization's instances,
readiness), what anyone else sees, and Slack's limits kept however large the organization."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import boto3

from actions import inventory
from chat.home import home_view, outsider_view
from core.approvals import PendingRequest
from core.incidents import Incident
from core.request import CommandRequest
from chat.slack import Slack
from core.settings import load
from findings.consumer import FindingsConsumer
from tests.helpers import CHANNEL, OUTSIDER, RESPONDER, SECOND_RESPONDER, TEAM, make_world, signed_headers
from tests.samples import guardduty
from tests.test_hostile_messages import HOSTILE, MARKUP
from tests.test_incidents import declare
from tests.test_organization import FIRST, TRUST, member_session


def app_home_opened(user: str, tab: str = "home") -> str:
    """The Events API request Slack sends when ``user`` opens one of irbot's tabs."""
    return json.dumps({"token": "deprecated-verification-token", "team_id": TEAM, "api_app_id": "A0IRBOT", "type": "event_callback",
                       "event_id": f"Ev{uuid.uuid4().hex[:10].upper()}", "event_time": int(time.time()),
                       "event": {"type": "app_home_opened", "user": user, "channel": "D0IRBOTDM", "tab": tab, "event_ts": str(time.time())}})


def open_home(irbot, user: str, tab: str = "home") -> None:
    body = app_home_opened(user, tab)
    status, _, elapsed = irbot.post(body, {**signed_headers(body), "Content-Type": "application/json"})
    assert status == 200 and elapsed < 3


def texts(view: dict, between: str = "\n") -> str:
    """Every text of a view, one after another."""
    found = []
    for block in view["blocks"]:
        if isinstance(block.get("text"), dict):
            found.append(block["text"]["text"])
        found += [e.get("text", "") for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return between.join(found)


def within_slacks_limits(view: dict) -> None:
    """At most 100 blocks; a header's text at most 150 characters, every other text at most 3,000."""
    assert len(view["blocks"]) <= 100
    for block in view["blocks"]:
        limit = 150 if block["type"] == "header" else 3000
        assert all(len(text) <= limit for text in texts({"blocks": [block]}, "\x00").split("\x00")), block["type"]


def test_a_responder_opening_the_home_tab_sees_incidents_approvals_findings_and_the_instances(run_irbot, world, slack, redis_conn):
    member = member_session(FIRST)
    far = make_world(session=member, bucket=None)
    member.client("iam").create_role(RoleName="irbot-responder", AssumeRolePolicyDocument=TRUST)
    irbot = run_irbot(IR_ACCOUNTS=FIRST)
    incident = declare(irbot, slack, "Crypto miner on web-1 --severity high")
    _, reply, _ = irbot.command(f"isolate {world['instance']}")
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    slack.wait_for(lambda s: any(request_id in m.get("text", "") and "Approval needed" in m["text"] for m in s.messages(CHANNEL)))
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="irbot-findings")["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody=guardduty(title=f"Miner {HOSTILE}"))
    FindingsConsumer(sqs, queue, Slack.from_settings(load(irbot.env)), redis_conn, "C0ALERTS01").poll_once()

    open_home(irbot, RESPONDER)
    # Published at once, from what Redis holds: the instances are being counted by a worker meanwhile.
    first = slack.wait_for(lambda s: s.home_of(RESPONDER))
    assert "Being gathered" in texts(first)
    irbot.settle(timeout=120)
    view = slack.home_of(RESPONDER)
    shown = texts(view)
    assert incident["id"] in shown and "Crypto miner on web-1" in shown and "commander <@U0ALICE01>" in shown
    assert "Waiting for approval (1)" in shown and request_id in shown and f"/ir isolate {world['instance']}" in shown
    assert "asked by <@U0ALICE01>" in shown
    assert "Miner &lt;!channel&gt;" in shown and not any(m in shown for m in MARKUP)
    assert "*2 instances* in 2 accounts" in shown
    assert "• 123456789012 us-east-1: 1" in shown and f"• {FIRST} us-east-1: 1" in shown
    image = boto3.client("ec2").describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["ImageId"]
    assert f"• `{image}`: 2" in shown
    assert "*Launched in the last 24 hours*: 2" in shown and far["instance"] in shown and world["instance"] in shown
    assert "No readiness check yet — run `/ir prep`." in shown
    within_slacks_limits(view)

    # Opened again within ten minutes: drawn from the stored overview, and no new count queued.
    published = len(slack.calls_to("views.publish"))
    redis_conn.set("irbot:prep:latest", json.dumps({"score": 62, "passed": 18, "total": 29, "failed": ["CloudTrail in eu-west-1", HOSTILE],
                                                    "at": "2026-11-26T10:00:00+00:00", "request": "0123456789ab",
                                                    "account": "123456789012", "evidence": "s3://ir-evidence/prep/x.json"}))
    open_home(irbot, SECOND_RESPONDER)
    again = slack.wait_for(lambda s: len(s.calls_to("views.publish")) > published and s.home_of(SECOND_RESPONDER))
    irbot.settle()
    assert len(slack.calls_to("views.publish")) == published + 1
    shown = texts(again)
    assert "*2 instances*" in shown and "gathered just now" in shown
    assert "*62%* — 18 of 29 checks passed" in shown and "CloudTrail in eu-west-1" in shown and not any(m in shown for m in MARKUP)


def test_anyone_else_gets_a_short_word_and_nothing_of_the_overview(run_irbot, world, slack):
    irbot = run_irbot()
    incident = declare(irbot, slack)
    open_home(irbot, OUTSIDER)
    view = slack.wait_for(lambda s: s.home_of(OUTSIDER))
    shown = texts(view)
    assert "incident responders' tool" in shown and "U0MALLORY" in shown and "IR_RESPONDERS" in shown
    assert "<@U0BOB0002>" in shown  # an approver to ask
    assert incident["id"] not in shown and world["instance"] not in shown and "Instances" not in shown
    irbot.settle()
    assert len(slack.calls_to("views.publish")) == 1  # no count of the instances for an outsider
    # The Messages tab is not the Home tab: nothing is published for it.
    open_home(irbot, RESPONDER, tab="messages")
    time.sleep(0.5)
    assert slack.home_of(RESPONDER) is None


def test_the_organizations_instances_are_counted_by_account_region_image_and_launch(monkeypatch):
    """60 accounts × 17 regions, 10,200 instances: counted without keeping them, then drawn within Slack's limits."""
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    regions = [f"xx-region-{n}" for n in range(17)]
    accounts = [f"{n:012d}" for n in range(1, 61)]

    def instances(account: str, region: str) -> list[dict]:
        return [{"Instances": [{"InstanceId": f"i-{account[-4:]}{regions.index(region):02d}{n:04d}", "InstanceType": "t3.micro",
                                "ImageId": f"ami-{(n * 7 + int(account)) % 40:08d}",
                                "LaunchTime": now - timedelta(hours=1 + n + regions.index(region))}]} for n in range(10)]

    monkeypatch.setattr(inventory, "enabled_regions", lambda session, region: regions)
    monkeypatch.setattr(inventory, "client", lambda session, service, region: (session, region))
    monkeypatch.setattr(inventory, "paginate", lambda ec2, operation, key, **params: instances(*ec2))

    def enter(account: str):
        if account == accounts[-1]:
            raise inventory.ActionError(f"irbot could not get into account {account} {HOSTILE}")
        return account

    found = inventory.count_instances(enter, accounts, "us-east-1", concurrency=8, now=now)
    assert found["total"] == 59 * 17 * 10 and found["accounts"] == 59 and found["regions"] == 17
    assert len(found["places"]) == 59 * 17 and sum(n for _, n in found["images"]) + found["other_images"][1] == found["total"]
    assert found["problem_count"] == 1 and HOSTILE in found["problems"][0]
    # Launched in the last 24 hours: n + region index < 23, the newest first.
    assert found["recent"] == 59 * sum(1 for r in range(17) for n in range(10) if 1 + n + r <= 24)
    assert [n["launched"] for n in found["newest"]] == sorted((n["launched"] for n in found["newest"]), reverse=True)
    assert len(json.dumps(found)) < 100_000

    view = home_view(incidents=[], pending=[], findings=[], found=found, prep=None, now=now + timedelta(minutes=3))
    within_slacks_limits(view)
    shown = texts(view)
    assert "*10,030 instances*" in shown or "*10030 instances*" in shown
    assert "gathered 3 min ago" in shown and "…and 983 more accounts and regions" in shown
    assert "1 part could not be counted" in shown and not any(m in shown for m in MARKUP)


def test_the_home_tab_stays_within_slacks_limits_whatever_it_holds():
    huge = HOSTILE * 40  # 4,000 characters of markup
    incidents = [Incident(id=f"IR-20261126-{n:03d}", title=f"{huge} {n}", severity=["low", "critical", HOSTILE][n % 3],
                          commander=HOSTILE if n % 2 else "U0ALICE01", channel_id=HOSTILE, opened_at=f"2026-11-26T10:{n % 60:02d}:00")
                 for n in range(500)]
    pending = [PendingRequest(request=CommandRequest(id=f"{n:012x}", command="isolate", targets=(f"i-0abc {huge}",),
                                                     options={"region": HOSTILE, "account": HOSTILE}, user_id=HOSTILE,
                                                     channel_id=CHANNEL, incident=HOSTILE, received_at=HOSTILE),
                              state="pending", quorum=1, expires_at=2e9) for n in range(300)]
    findings = [{"title": huge, "severity": HOSTILE, "source": HOSTILE, "account": HOSTILE, "region": HOSTILE, "kind": HOSTILE,
                 "resource": huge, "last_seen": HOSTILE} for _ in range(50)]
    found = {"at": "2026-11-26T10:00:00+00:00", "accounts": 60, "regions": 17, "total": 10_000,
             "places": [[HOSTILE, huge, 10] for _ in range(1020)], "images": [[huge, 400] for _ in range(25)], "other_images": [900, 1000],
             "recent": 10_000, "newest": [{"id": huge, "type": HOSTILE, "account": HOSTILE, "region": HOSTILE, "launched": HOSTILE}] * 5,
             "problems": [huge] * 10, "problem_count": 500}
    prep = {"score": 62, "passed": 18, "total": 29, "failed": [huge] * 300, "at": HOSTILE, "request": huge, "account": HOSTILE, "evidence": huge}
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    view = home_view(incidents=incidents, pending=pending, findings=findings, found=found, prep=prep, now=now,
                     problems=[huge, huge])
    within_slacks_limits(view)
    shown = texts(view)
    assert not any(m in shown for m in MARKUP)
    assert "Open incidents (500)" in shown and "more incidents" in shown and "Waiting for approval (300)" in shown and "more requests" in shown
    assert re.search(r"Open incidents \(500\)\n:red_circle: \*IR-", shown)  # the critical ones first
    error = home_view(incidents=[], pending=[], findings=[], found={"at": HOSTILE, "error": huge}, prep=None, now=now)
    within_slacks_limits(error)
    assert "could not gather the instances" in texts(error) and not any(m in texts(error) for m in MARKUP)
    outsider = outsider_view(HOSTILE, [HOSTILE, "U0BOB0002"])
    within_slacks_limits(outsider)
    assert not any(m in texts(outsider) for m in MARKUP)


def test_an_old_count_is_shown_while_a_new_one_is_gathered_then_the_tab_is_drawn_again(run_irbot, world, slack, redis_conn):
    irbot = run_irbot()
    old = (datetime.now(timezone.utc) - timedelta(minutes=20)).isoformat(timespec="seconds")
    redis_conn.set("irbot:home:overview", json.dumps({"at": old, "accounts": 1, "regions": 1, "total": 7, "places": [["123456789012", "us-east-1", 7]],
                                                      "images": [], "other_images": [0, 0], "recent": 0, "newest": []}))
    open_home(irbot, RESPONDER)
    first = texts(slack.wait_for(lambda s: s.home_of(RESPONDER)))
    assert "*7 instances*" in first and "gathered 20 min ago; being gathered again" in first
    irbot.settle(timeout=120)
    shown = texts(slack.home_of(RESPONDER))
    assert "*7 instances*" not in shown and "*1 instance* in 1 account" in shown and "gathered just now" in shown
    assert "• 123456789012 us-east-1: 1" in shown and world["instance"] in shown
    assert len(slack.calls_to("views.publish")) == 2
