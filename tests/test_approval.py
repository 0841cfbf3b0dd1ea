"""The two-person rule over HTTP: signed commands and button clicks against the bot and its worker
(in this process; the restart test starts the real `irbot serve` and `irbot worker`), with the real
Redis and moto. Every refusal leaves the instance running."""

from __future__ import annotations

import re
import threading

import boto3
import redis

from standins.fake_slack import FakeSlack
from tests.helpers import CHANNEL, OUTSIDER, RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER
from tests.processes import Irbot
from core.audit import AuditTrail


def instance_state(instance_id: str) -> str:
    return boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def ask_to_stop(irbot: Irbot, slack: FakeSlack, instance_id: str, user: str = RESPONDER) -> tuple[str, str]:
    """/ir stop, then wait for the approval card; returns (request ID, card ts)."""
    status, reply, elapsed = irbot.command(f"stop {instance_id}", user=user)
    assert status == 200 and elapsed < 3
    assert "needs approval by someone else" in reply["text"]
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if request_id in m.get("text", "")), None))
    # The card is short, with the buttons; the plan, step by step, is in its thread.
    assert "Approval needed" in card["text"] and "Plan (dry run, nothing changed yet): 1 step: 1 would do — each in the thread." in card["text"]
    assert "running → stopped" not in card["text"]
    assert any(b["type"] == "actions" for b in card["blocks"])
    assert f"Stop {instance_id} — would do: running → stopped" in wait_thread(slack, card["ts"], "Plan (dry run")
    assert [m for m in slack.top_level(CHANNEL) if request_id in m.get("text", "")] == [card]  # one message in the channel
    return request_id, card["ts"]


def card_text(slack: FakeSlack, ts: str) -> str:
    return slack.current(CHANNEL, ts)["text"]


def thread_text(slack: FakeSlack, ts: str) -> str:
    return "\n".join(m["text"] for m in slack.thread(CHANNEL, ts))


def wait_thread(slack: FakeSlack, ts: str, words: str, timeout: float = 30) -> str:
    return slack.wait_for(lambda s: words in thread_text(s, ts) and thread_text(s, ts), timeout=timeout)


def wait_card(slack: FakeSlack, ts: str, words: str, timeout: float = 30) -> str:
    return slack.wait_for(lambda s: words in card_text(s, ts) and card_text(s, ts), timeout=timeout)


def audit_of(redis_url: str, request_id: str) -> list[dict]:
    return [r for r in AuditTrail(redis.Redis.from_url(redis_url)).records() if r["params"].get("request") == request_id]


def test_a_requester_can_never_approve_their_own_request(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_APPROVERS=f"{RESPONDER},{SECOND_RESPONDER}")  # alice is an approver too
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: s.ephemerals(RESPONDER))
    assert slack.ephemerals(RESPONDER) == ["You asked for this, so you can't approve it: the two-person rule needs an approver other than the requester."]
    irbot.settle()
    assert "Approval needed" in card_text(slack, ts)
    assert instance_state(world["instance"]) == "running"
    assert [r["action"] for r in audit_of(redis_url, request_id)] == ["request.opened", "request.pending", "approval.refused"]


def test_an_approver_outside_the_list_is_refused(run_irbot, world, slack):
    irbot = run_irbot()
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(THIRD_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: s.ephemerals(THIRD_RESPONDER))
    assert "Only irbot's approvers" in slack.ephemerals(THIRD_RESPONDER)[0] and f"you (user ID {THIRD_RESPONDER}) are not one of them" in slack.ephemerals(THIRD_RESPONDER)[0]
    irbot.settle()
    assert "Approval needed" in card_text(slack, ts) and instance_state(world["instance"]) == "running"


def test_a_non_responders_request_is_refused_with_nothing_queued(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    jobs = lambda: sum(1 for _ in redis.Redis.from_url(redis_url).scan_iter("rq:job:*"))  # noqa: E731
    requests = lambda: sum(1 for _ in redis.Redis.from_url(redis_url).scan_iter("irbot:request:*"))  # noqa: E731
    before = jobs(), requests()
    status, reply, _ = irbot.command(f"stop {world['instance']}", user=OUTSIDER)
    assert status == 200 and reply["response_type"] == "ephemeral" and "not on irbot's responder list" in reply["text"]
    irbot.settle()
    assert (jobs(), requests()) == before
    assert slack.messages(CHANNEL) == []


def test_deny_ends_the_request_for_good(run_irbot, world, slack):
    irbot = run_irbot()
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(SECOND_RESPONDER, "ir_deny", request_id)
    text = wait_card(slack, ts, "Denied")
    assert f"Denied by <@{SECOND_RESPONDER}>" in text and "nothing was changed" in text
    assert not any(b["type"] == "actions" for b in slack.current(CHANNEL, ts)["blocks"])
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert slack.ephemerals(SECOND_RESPONDER)[-1].startswith(f"Request {request_id} was denied by <@{SECOND_RESPONDER}>, so it can't be approved.")
    irbot.settle()
    assert instance_state(world["instance"]) == "running"


def test_only_the_requester_cancels_and_a_cancelled_request_ends_for_good(run_irbot, world, slack):
    irbot = run_irbot()
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(SECOND_RESPONDER, "ir_cancel", request_id)
    slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert slack.ephemerals(SECOND_RESPONDER) == [f"Only <@{RESPONDER}>, who asked for this, can cancel it."]
    irbot.click(RESPONDER, "ir_cancel", request_id)
    assert f"Cancelled by <@{RESPONDER}>" in wait_card(slack, ts, "Cancelled")
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: len(s.ephemerals(SECOND_RESPONDER)) == 2)
    assert "was cancelled" in slack.ephemerals(SECOND_RESPONDER)[-1]
    irbot.settle()
    assert instance_state(world["instance"]) == "running"


def test_a_request_nobody_approves_in_time_expires_for_good(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_APPROVAL_EXPIRY_SECONDS="3")
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    text = wait_card(slack, ts, "Expired", timeout=30)  # the worker's scheduler ends it, unasked
    assert "Expired unapproved" in text and not any(b["type"] == "actions" for b in slack.current(CHANNEL, ts)["blocks"])
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert slack.ephemerals(SECOND_RESPONDER)[-1].startswith(f"Request {request_id} expired unapproved")
    irbot.settle()
    assert instance_state(world["instance"]) == "running"
    assert [r["action"] for r in audit_of(redis_url, request_id)][-1] == "request.expired"


def test_two_approvers_at_once_and_a_replayed_click_give_exactly_one_execution(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_APPROVERS=f"{SECOND_RESPONDER},{THIRD_RESPONDER}")
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    from tests.processes import block_action
    from tests.helpers import signed_headers

    bodies = [block_action(SECOND_RESPONDER, "ir_approve", request_id), block_action(THIRD_RESPONDER, "ir_approve", request_id)]
    signed = [(b, signed_headers(b)) for b in bodies]
    signed.append(signed[0])  # Slack retries, or someone replays, the very same signed request
    barrier = threading.Barrier(len(signed))
    statuses = []

    def click(body, headers):
        barrier.wait()
        statuses.append(irbot.post(body, headers)[0])

    threads = [threading.Thread(target=click, args=pair) for pair in signed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]
    wait_card(slack, ts, "Done")
    irbot.settle()  # room for a second execution, if there were one
    trail = [r["action"] for r in audit_of(redis_url, request_id)]
    assert trail.count("request.approved") == 1
    assert trail.count("job.started") == 1 and trail.count("step") == 1 and trail.count("job.finished") == 1
    assert instance_state(world["instance"]) in ("stopping", "stopped")


def test_a_quorum_of_two_needs_two_distinct_approvers(run_irbot, world, slack):
    irbot = run_irbot(IR_APPROVERS=f"{SECOND_RESPONDER},{THIRD_RESPONDER}", IR_APPROVAL_QUORUM="2")
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    assert "Needs 1 more approval" in wait_card(slack, ts, f"Approved so far by <@{SECOND_RESPONDER}>")
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    slack.wait_for(lambda s: s.ephemerals(SECOND_RESPONDER))
    assert "approved this request already" in slack.ephemerals(SECOND_RESPONDER)[-1]
    assert instance_state(world["instance"]) == "running"
    irbot.click(THIRD_RESPONDER, "ir_approve", request_id)
    text = wait_card(slack, ts, "Done")
    assert f"<@{SECOND_RESPONDER}>" in text and f"<@{THIRD_RESPONDER}>" in text
    assert instance_state(world["instance"]) in ("stopping", "stopped")


def test_a_waiting_request_survives_a_restart_of_the_worker_and_the_bot(start_irbot, world, slack):
    irbot = start_irbot()  # end to end: the real processes, stopped and started again
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.restart("worker", "serve")
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    text = wait_card(slack, ts, "Done")
    assert f"Approved by <@{SECOND_RESPONDER}>" in text and "1 step: 1 done" in text
    assert "done: running → stopping" in wait_thread(slack, ts, "Audit records")
    assert instance_state(world["instance"]) in ("stopping", "stopped")


def test_a_dry_run_needs_no_approval_and_changes_nothing(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    status, reply, _ = irbot.command(f"stop {world['instance']} --dry-run")
    assert reply["response_type"] == "ephemeral" and "Queued" in reply["text"]  # the channel gets the request's own message
    [message] = slack.wait_for(lambda s: s.top_level(CHANNEL))
    text = wait_card(slack, message["ts"], "Dry run, nothing changed")
    assert "1 step: 1 would do" in text
    assert "would do: running → stopped" in wait_thread(slack, message["ts"], "Audit records")
    assert instance_state(world["instance"]) == "running"


def test_a_finding_cards_isolate_button_opens_the_same_approval_and_isolates_once_approved(run_irbot, world, slack):
    import json as _json

    irbot = run_irbot(IR_UNTRACK_PAUSE_SECONDS="0")
    value = _json.dumps({"command": "isolate", "target": world["instance"], "region": "us-east-1"})
    irbot.click(RESPONDER, "ir_request_isolate", value)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Approval needed" in m.get("text", "")), None))
    assert f"`/ir isolate {world['instance']}` in 123456789012, us-east-1, requested by <@{RESPONDER}>" in card["text"]
    request_id = next(b for b in card["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    irbot.click(RESPONDER, "ir_approve", request_id)  # still the two-person rule
    slack.wait_for(lambda s: s.ephemerals(RESPONDER))
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    wait_card(slack, card["ts"], "Done")
    assert "Cut eni-" in wait_thread(slack, card["ts"], "Audit records")
    groups = boto3.client("ec2").describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["SecurityGroups"]
    assert [g["GroupName"] for g in groups] == [f"irbot-isolation-{world['vpc']}"]


def test_a_finding_button_from_a_non_responder_is_refused(run_irbot, world, slack):
    import json as _json

    irbot = run_irbot()
    irbot.click(OUTSIDER, "ir_request_isolate", _json.dumps({"command": "isolate", "target": world["instance"], "region": "us-east-1"}))
    slack.wait_for(lambda s: s.ephemerals(OUTSIDER))
    assert "not on irbot's responder list" in slack.ephemerals(OUTSIDER)[0]
    irbot.settle()
    assert not any("Approval needed" in m.get("text", "") for m in slack.messages(CHANNEL))


def test_a_destructive_option_is_in_the_headline_and_the_approve_dialog_and_a_dry_run_says_it_is_one(run_irbot, world, slack):
    irbot = run_irbot()
    key = boto3.client("iam").create_access_key(UserName=boto3.client("iam").create_user(UserName="deploy")["User"]["UserName"])["AccessKey"]["AccessKeyId"]
    _, reply, _ = irbot.command(f"revoke-key {key} --delete")
    assert f"`/ir revoke-key {key} --delete` — *and DELETE the key" in reply["text"]
    request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
    assert "and DELETE the key" in card["blocks"][0]["text"]["text"]
    approve = next(e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"] if e["action_id"] == "ir_approve")
    assert "and DELETE the key" in approve["confirm"]["text"]["text"]

    _, reply, _ = irbot.command(f"isolate {world['instance']} --dry-run")
    assert "--dry-run` — *as a DRY RUN: nothing will change*" in reply["text"]
    ran = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "--dry-run" in m["text"]), None))
    assert "DRY RUN" in ran["blocks"][0]["text"]["text"]
