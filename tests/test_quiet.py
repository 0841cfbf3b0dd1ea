"""A quiet channel, over HTTP: one top-level message per request with its detail in that message's thread, digests
short in messages, and status and audit answered to the asker alone unless shared."""

from __future__ import annotations

import json
import re

import pytest

from bot.grammar import UsageError, parse
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER
from tests.test_approval import ask_to_stop, wait_card, wait_thread

FULL_DIGEST = re.compile(r"sha256 `?[0-9a-f]{13}")  # more than the 12 hex characters a message shows


def shown(slack) -> list[str]:
    """Every text irbot put in the channel, each post and each redraw of one."""
    return [c.params.get("text", "") for c in slack.calls if c.method in ("chat.postMessage", "chat.update")]


def test_each_request_is_one_message_in_the_channel_with_its_steps_evidence_and_seal_in_its_thread(run_irbot, world, slack):
    irbot = run_irbot()
    for text in (f"collect {world['instance']}", f"snapshot {world['instance']}"):
        status, reply, _ = irbot.command(text)
        # The asker alone sees the ack: the channel gets the request's own message.
        assert status == 200 and reply["response_type"] == "ephemeral" and "as request `" in reply["text"]
    collected = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if "Evidence from" in m["text"]), None), timeout=60)
    snapshot = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if "/ir snapshot" in m["text"]), None), timeout=60)
    wait_card(slack, snapshot["ts"], "Done: ")
    request_id, stop_ts = ask_to_stop(irbot, slack, world["instance"])  # the card, with its buttons, is a top-level message
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    wait_card(slack, stop_ts, "Done")
    irbot.settle()

    # Three requests, three messages in the channel; each short, with what happened in its thread.
    assert [m["ts"] for m in slack.top_level(CHANNEL)] == [collected["ts"], snapshot["ts"], stop_ts]
    for ts in (collected["ts"], snapshot["ts"], stop_ts):
        message = slack.current(CHANNEL, ts)
        assert len(message["text"].splitlines()) <= 3 and "Audit records" not in message["text"]
        assert "Audit records" in wait_thread(slack, ts, "chain head sha256")  # the seal, only in the thread
    assert "3 steps: 3 done" in slack.current(CHANNEL, snapshot["ts"])["text"]
    assert re.search(r"Snapshot 2 volumes together — done: snap-", wait_thread(slack, snapshot["ts"], "Audit records"))
    assert "— done: running → stopping" in wait_thread(slack, stop_ts, "Audit records")
    # The approval card lost its buttons once approved, and never carried a step.
    assert not any(b["type"] == "actions" for b in slack.current(CHANNEL, stop_ts)["blocks"])
    assert "running → stopp" not in slack.current(CHANNEL, stop_ts)["text"]

    # Digests: 12 hex characters in every message, posted or redrawn; whole in the evidence.
    assert not [t for t in shown(slack) if FULL_DIGEST.search(t)]
    assert re.search(r"• instance\.json — [\d.]+ \w+ — sha256 [0-9a-f]{12}… — http", wait_thread(slack, collected["ts"], "instance.json"))


def test_status_and_audit_answer_the_asker_alone_unless_shared(run_irbot, world, slack):
    irbot = run_irbot()
    irbot.command(f"collect {world['instance']}")
    card = slack.wait_for(lambda s: next((m for m in s.top_level(CHANNEL) if "Evidence from" in m["text"]), None), timeout=60)
    wait_thread(slack, card["ts"], "Audit records")
    irbot.settle()
    posted = len(slack.messages(CHANNEL))

    status, private, elapsed = irbot.command("audit", user=SECOND_RESPONDER)
    assert status == 200 and elapsed < 3 and private["response_type"] == "ephemeral"
    assert private["text"].startswith(f"*Audit trail of {CHANNEL}*") and "evidence.stored" in private["text"]
    assert not FULL_DIGEST.search(private["text"]) and re.search(r"Chain head: record #\d+, sha256 `[0-9a-f]{12}…`", private["text"])
    _, shared, _ = irbot.command("audit --share", user=SECOND_RESPONDER)
    assert shared["response_type"] == "in_channel" and shared["text"] == private["text"]
    irbot.settle()
    assert len(slack.messages(CHANNEL)) == posted  # neither answer was a post of irbot's own

    # --share is in the grammar of both, and in /ir help; a typo is a sentence.
    assert parse("status --share").options == {"share": True} and parse("audit --share").options == {"share": True}
    with pytest.raises(UsageError, match="`/ir audit` has no option `--shared` \\(its options: `--share`\\)"):
        parse("audit --shared")
    help_text = irbot.command("help")[1]["text"]
    assert "`/ir status [--share]`" in help_text and "`/ir audit [--share]`" in help_text


def test_a_hunt_is_one_message_naming_its_worst_findings_with_the_rest_in_its_thread(run_irbot, world, slack, monkeypatch):
    import boto3

    from tests.test_organization import NoEvents
    from workers import running

    monkeypatch.setattr(running, "EVENT_SOURCE", NoEvents())  # moto can't answer CloudTrail's LookupEvents
    iam = boto3.client("iam")
    iam.create_user(UserName="ci")
    key = iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    for _ in range(2):
        iam.create_access_key(UserName=iam.create_user(UserName=f"made-{_}")["User"]["UserName"])
    irbot = run_irbot()
    status, reply, _ = irbot.command(f"hunt-key {key}")
    assert reply["response_type"] == "ephemeral"
    [message] = slack.wait_for(lambda s: s.top_level(CHANNEL), timeout=60)
    summary = wait_card(slack, message["ts"], "Done", timeout=120)
    irbot.settle()
    thread = slack.thread(CHANNEL, message["ts"])
    cards = [m for m in thread if m["text"].startswith("Finding of")]
    named = re.findall(r"^• (.+)$", summary, re.M)
    total = int(re.search(r"(\d+) findings, the worst 3:", summary).group(1))
    assert len(named) == 3 and len(cards) == total - 3 >= 1
    assert json.dumps(slack.top_level(CHANNEL)).count("Finding of") == 0  # no finding card in the channel itself
    assert "Audit records" in "\n".join(m["text"] for m in thread) and "Audit records" not in summary
