"""Hostile findings (issue 11): anyone with securityhub:BatchImportFindings writes every field of a finding.
None of it may stop `irbot findings`, take over another finding's card, ping or phish the channel, or put
a value on a button that a click would turn into a different command."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import messages
from findings.events import MalformedFinding, parse
from tests.helpers import CHANNEL, RESPONDER
from tests.processes import IRBOT
from tests.samples import GUARDDUTY_EVENT, SECURITY_HUB_EVENT, guardduty, security_hub
from tests.test_findings import ALERTS, buttons, consumer, queued, queues  # noqa: F401 (fixtures shared with the findings tests)

PHISH = "<!channel> <https://evil.example/sso|Slack SSO expired - sign in>"
# What Slack turns into a ping, a link, a mention or a channel reference, if it arrives unescaped.
CONTROL = ("<!", "<http", "<@", "<#")


def event(base: dict, **changes) -> dict:
    """A copy of a sample event with fields changed; a path is keys and list indexes joined by '.'; None deletes."""
    changed = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, leaf = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = changed
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[leaf]
        else:
            target[leaf] = value
    return changed


def gd(**changes) -> str:
    return json.dumps(event(GUARDDUTY_EVENT, **changes))


def sh(**changes) -> str:
    return json.dumps(event(SECURITY_HUB_EVENT, **changes))


def dead_letters(sqs, dlq: str) -> dict[str, str]:
    """What the dead-letter queue holds now: body → irbot's reason. Taken off the queue."""
    found = {}
    while True:
        batch = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"], VisibilityTimeout=30).get("Messages", [])
        if not batch:
            return found
        for message in batch:
            found[message["Body"]] = message.get("MessageAttributes", {}).get("irbot-reason", {}).get("StringValue", "")
        sqs.delete_message_batch(QueueUrl=dlq, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def shown(value, key: str = "") -> list[str]:
    """Every string of a Slack payload that Slack renders: texts, not button values or IDs."""
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in ("value", "action_id", "block_id", "channel", "ts") for s in shown(v, k)]
    if isinstance(value, list):
        return [s for v in value for s in shown(v, key)]
    return [value] if isinstance(value, str) and key == "text" else []


def unescaped(payload: dict) -> list[str]:
    return [s for s in shown(payload) if any(c in s for c in CONTROL)]


def over_limits(payload: dict) -> list[str]:
    """The parts of a message Slack would refuse for length (invalid_blocks)."""
    wrong = [] if len(payload.get("blocks") or []) <= 50 else ["more than 50 blocks"]
    for block in payload.get("blocks") or []:
        if len((block.get("text") or {}).get("text", "")) > 3000:
            wrong.append(f"{block['type']} text")
        wrong += ["field" for f in block.get("fields", []) if len(f["text"]) > 2000]
        for element in block.get("elements", []):
            if block["type"] == "context" and len(element.get("text", "")) > 3000:
                wrong.append("context element")
            if element.get("type") == "button" and (len(element["text"]["text"]) > 75 or len(element.get("value", "")) > 2000):
                wrong.append("button")
    return wrong


def drain(consumer, expected: int) -> int:  # noqa: F811 (the fixture's name)
    """Poll until ``expected`` messages are done with (or a few empty polls pass); how many were."""
    handled = 0
    for _ in range(expected + 3):
        if handled >= expected:
            break
        handled += consumer.poll_once(wait_seconds=0)
    return handled


POISON = {
    "detail is a string": (json.dumps({"detail-type": "GuardDuty Finding", "detail": "x"}), "an EventBridge event whose detail is not an object"),
    "accountId is a number": (gd(**{"detail.accountId": 123456789012}), "a GuardDuty finding whose accountId is not a 12-digit account ID"),
    "title is a list": (gd(**{"detail.title": ["EC2 instance is mining"]}), "a GuardDuty finding whose title is not a string"),
    "detail-type is a number": (gd(**{"detail-type": 7}), "an EventBridge event whose detail-type is not a string"),
    "resource is a string": (gd(**{"detail.resource": "i-99999999"}), "a GuardDuty finding whose resource is not an object"),
    "service is a list": (gd(**{"detail.service": []}), "a GuardDuty finding whose service is not an object"),
    "instanceId is an object": (gd(**{"detail.resource.instanceDetails.instanceId": {"id": "i-99999999"}}),
                                "a GuardDuty finding whose resource.instanceDetails.instanceId is not a string"),
    "severity is NaN": (gd(**{"detail.severity": float("nan")}), "a GuardDuty finding whose severity is not a number from 0 to 10"),
    "count is huge": (gd(**{"detail.service.count": 10**400}), "a GuardDuty finding whose service.count is not a whole number from 0 to 2147483648"),
    "region is not a region": (gd(**{"detail.region": "us-east-1 --dry-run"}), "a GuardDuty finding whose region is not a region"),
    "account is not 12 digits": (gd(**{"detail.accountId": "<!channel>"}), "a GuardDuty finding whose accountId is not a 12-digit account ID"),
    "Severity is a list": (sh(**{"detail.findings.0.Severity": ["HIGH"]}), "a Security Hub finding whose Severity is not an object"),
    "Resources is an object": (sh(**{"detail.findings.0.Resources": {"Type": "AwsEc2Instance"}}), "a Security Hub finding whose Resources is not a list"),
    "a finding is a string": (sh(**{"detail.findings": ["x"]}), "a Security Hub finding that is not an object"),
    "Types holds a number": (sh(**{"detail.findings.0.Types": [7]}), "a Security Hub finding whose Types[0] is not a string"),
    "Id is an object": (sh(**{"detail.findings.0.Id": {"x": 1}}), "a Security Hub finding whose Id is not an ID of at most 512 printable characters"),
    "JSON nested past Python's limit": ("[" * 50000 + "]" * 50000, "the body is not JSON"),
}


def test_poison_findings_go_to_the_dead_letter_queue_with_a_reason_and_the_consumer_goes_on(consumer, queues, slack):  # noqa: F811
    sqs, main, dlq = queues
    for body, _ in POISON.values():
        sqs.send_message(QueueUrl=main, MessageBody=body)
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    assert drain(consumer, len(POISON) + 1) == len(POISON) + 1
    assert len(slack.messages(ALERTS)) == 1 and queued(sqs, main) == 0
    assert dead_letters(sqs, dlq) == {body: reason for body, reason in POISON.values()}


def test_a_finding_irbot_fails_to_draw_is_dead_lettered_as_unreadable_and_the_rest_are_posted(consumer, queues, slack, monkeypatch):  # noqa: F811
    sqs, main, dlq = queues
    draw = messages.finding_alert

    def fails_on_one(finding):  # a fault of irbot's own, met by one finding only
        if finding.title == "draws badly":
            raise ZeroDivisionError("<!channel> draws badly")
        return draw(finding)

    monkeypatch.setattr(messages, "finding_alert", fails_on_one)
    bad = gd(**{"detail.title": "draws badly"})
    sqs.send_message(QueueUrl=main, MessageBody=bad)
    sqs.send_message(QueueUrl=main, MessageBody=security_hub())
    assert drain(consumer, 2) == 2
    [card] = slack.messages(ALERTS)
    assert card["text"].startswith("Security Hub finding")
    assert dead_letters(sqs, dlq) == {bad: "irbot could not read it: ZeroDivisionError"} and queued(sqs, main) == 0


def test_irbot_findings_stays_up_through_poison_messages(irbot_env, queues, slack, tmp_path):  # noqa: F811
    sqs, main, dlq = queues
    marker = "MARKER-0f9e8d7c"  # in every poison body, to show no log line quotes one
    env = {**irbot_env, "IR_FINDINGS_QUEUE_URL": main, "IR_ALERTS_CHANNEL": ALERTS, "PATH": os.environ["PATH"]}
    log = tmp_path / "findings.log"
    with log.open("wb") as out:
        process = subprocess.Popen([IRBOT, "findings"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        poison = [gd(**{"detail.resource": marker}), sh(**{"detail.findings.0.Title": [marker]}),
                  gd(**{"detail.title": marker, "detail.service": [marker]}), json.dumps({"detail-type": "GuardDuty Finding", "detail": marker})]
        for round_ in (1, 2):  # a second round: the loop still takes messages after the first poison
            for body in poison:
                sqs.send_message(QueueUrl=main, MessageBody=body)
            sqs.send_message(QueueUrl=main, MessageBody=guardduty(id=f"f{round_}" * 16))
            slack.wait_for(lambda s: len(s.messages(ALERTS)) == round_ or process.poll() is not None, timeout=60)
            assert process.poll() is None, log.read_text()
            assert len(slack.messages(ALERTS)) == round_
        deadline = time.monotonic() + 30
        reasons: dict[str, str] = {}
        while len(reasons) < len(poison) and time.monotonic() < deadline:
            reasons.update(dead_letters(sqs, dlq))
            time.sleep(0.2)
        assert set(reasons) == set(poison) and all(reasons.values())
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(15)
    assert marker not in log.read_text()


def test_a_custom_security_hub_finding_reusing_a_guardduty_id_gets_its_own_card(consumer, queues, slack):  # noqa: F811
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    assert drain(consumer, 1) == 1
    [genuine] = slack.messages(ALERTS)
    custom = sh(**{"detail.findings.0.Id": GUARDDUTY_EVENT["detail"]["id"],
                   "detail.findings.0.ProductArn": "arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default",
                   "detail.findings.0.Title": "All clear: GuardDuty finding resolved, no action needed",
                   "detail.findings.0.Severity": {"Label": "LOW", "Normalized": 1}})
    # The same Id and product from another account is another finding too.
    elsewhere = sh(**{"detail.findings.0.AwsAccountId": "210987654321"})
    for body in (custom, security_hub(), elsewhere):
        sqs.send_message(QueueUrl=main, MessageBody=body)
    consumer.minimum = "low"
    assert drain(consumer, 3) == 3
    cards = slack.messages(ALERTS)
    assert len(cards) == 4 and slack.calls_to("chat.update") == []
    assert slack.current(ALERTS, genuine["ts"])["text"] == genuine["text"] and "BitcoinTool" in genuine["text"]
    [imported] = [c for c in cards if "All clear" in c["text"]]
    assert imported["text"].startswith("Security Hub finding") and "product/123456789012/default" in json.dumps(imported["blocks"])
    assert sum("account 210987654321" in c["text"] for c in cards) == 1


def test_hostile_strings_reach_slack_escaped_and_within_slacks_limits(consumer, queues, slack):  # noqa: F811
    sqs, main, _ = queues
    long = PHISH + " &<>" * 3000
    sqs.send_message(QueueUrl=main, MessageBody=gd(**{
        "detail.title": long, "detail.type": "<@U0ADMIN> Backdoor:EC2/C&CActivity.B", "detail.resource.instanceDetails": None,
        "detail.resource.resourceType": "<#C0GENERAL>",
        "detail.resource.accessKeyDetails": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE <!here>", "userName": "<!subteam^S0ADMINS>"},
        "detail.service.eventFirstSeen": "<!date^1700000000^{date}|yesterday>", "detail.service.eventLastSeen": "<https://evil.example>"}))
    sqs.send_message(QueueUrl=main, MessageBody=sh(**{
        "detail.findings.0.Title": PHISH, "detail.findings.0.Types": ["<!everyone> " * 500],
        "detail.findings.0.Id": "<https://evil.example/id|finding>", "detail.findings.0.ProductArn": "<@U0ADMIN>",
        "detail.findings.0.Resources": [{"Type": "<!channel>"}], "detail.findings.0.FirstObservedAt": "<#C0GENERAL|general>"}))
    assert drain(consumer, 2) == 2
    cards = slack.messages(ALERTS)
    assert len(cards) == 2
    assert [unescaped(card) for card in cards] == [[], []]
    assert [over_limits(card) for card in cards] == [[], []]
    for card in cards:
        assert "&lt;!channel&gt; &lt;https://evil.example/sso|Slack SSO expired - sign in&gt;" in card["text"]
        assert buttons(card) == ["Declare incident"]  # neither resource is one a command takes


def test_a_card_offers_no_button_whose_target_or_region_the_command_would_refuse(consumer, queues, slack):  # noqa: F811
    sqs, main, _ = queues
    for body in (gd(**{"detail.id": "1", "detail.resource.instanceDetails.instanceId": "i-99999999 --region eu-west-1"}),
                 gd(**{"detail.id": "2", "detail.resource.instanceDetails": None,
                       "detail.resource.accessKeyDetails": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE --delete", "userName": "deploy-bot"}}),
                 gd(**{"detail.id": "3", "detail.region": "xx-nowhere-9"}),  # shaped like a region, but none AWS has
                 gd(**{"detail.id": "4", "detail.resource.instanceDetails.instanceId": "i-0123456789abcdef0"})):
        sqs.send_message(QueueUrl=main, MessageBody=body)
    assert drain(consumer, 4) == 4
    cards = {card["text"]: card for card in slack.messages(ALERTS)}
    assert len(cards) == 4
    offered = {text.split("; first seen")[0].split(", ", 3)[-1]: buttons(card) for text, card in cards.items()}
    assert offered == {
        "us-east-1, instance `i-99999999 --region eu-west-1`": ["Declare incident"],
        "us-east-1, access-key `AKIAIOSFODNN7EXAMPLE --delete`": ["Declare incident"],
        "xx-nowhere-9, instance `i-99999999`": ["Declare incident"],
        "us-east-1, instance `i-0123456789abcdef0`": ["Declare incident", "Collect", "Isolate"],
    }


def test_a_card_button_with_a_value_irbot_would_not_draw_queues_nothing(run_irbot, world, slack):
    irbot = run_irbot()
    instance = world["instance"]
    tampered = [
        ("ir_request_revoke-key", {"command": "revoke-key", "target": "AKIAIOSFODNN7EXAMPLE --delete"}),
        ("ir_request_revoke-key", {"command": "revoke-key", "target": "AKIAIOSFODNN7EXAMPLE --dry-run", "region": "us-east-1"}),
        ("ir_request_isolate", {"command": "isolate", "target": instance, "region": "us-east-1 --dry-run"}),
        ("ir_request_isolate", {"command": "isolate", "target": f"{instance}\n", "region": "us-east-1"}),
        ("ir_request_release", {"command": "release", "target": instance, "region": "us-east-1"}),  # no card offers it
        ("ir_request_collect", {"command": "isolate", "target": instance, "region": "us-east-1"}),  # not the button clicked
        ("ir_request_isolate", {"command": "isolate", "target": ["i-0123456789abcdef0"]}),
    ]
    for action_id, value in tampered:
        irbot.click(RESPONDER, action_id, json.dumps(value))
    slack.wait_for(lambda s: len(s.ephemerals(RESPONDER)) == len(tampered))
    assert all(text.endswith("Nothing was queued.") for text in slack.ephemerals(RESPONDER))
    # clicks are answered on Bolt's listener threads, so in any order
    assert any("`AKIAIOSFODNN7EXAMPLE --delete` is not an AWS access key ID" in text for text in slack.ephemerals(RESPONDER))
    # The card's own button still works, and is the only thing that reached the channel.
    irbot.click(RESPONDER, "ir_request_isolate", json.dumps({"command": "isolate", "target": instance, "region": "us-east-1"}))
    slack.wait_for(lambda s: any("Approval needed" in m.get("text", "") for m in s.messages(CHANNEL)))
    irbot.settle()
    texts = [m.get("text", "") for m in slack.top_level(CHANNEL)]
    assert sum("Approval needed" in t for t in texts) == 1 and all(f"`/ir isolate {instance}`" in t for t in texts), texts


# -- fuzzing ------------------------------------------------------------------------------------

PINGS = [PHISH, "<!here>", "<@U0ADMIN>", "<#C0GENERAL|general>", "<!subteam^S0ADMINS>", "<https://evil.example>", "<http://x|y>",
         "<!date^1700000000^{date}|now>"]
HOSTILE = [*PINGS, "AKIAIOSFODNN7EXAMPLE --delete", "i-99999999 --region eu-west-1", "&lt;!channel&gt;", "&", "\u202e", "\ud800",
           "\n*Severity*\ncritical", "`", "x" * 4000, "&<>" * 700, "", "GuardDuty Finding", "Security Hub Findings - Imported", "AwsEc2Instance",
           "AwsIamAccessKey", "HIGH", "critical", "123456789012", "us-east-1", "i-0123456789abcdef0", "AKIAIOSFODNN7EXAMPLE"]
strings = st.one_of(st.sampled_from(PINGS), st.sampled_from(HOSTILE), st.text(max_size=20),
                    st.builds(lambda a, b, c: a + b + c, st.text(max_size=5), st.sampled_from(PINGS), st.text(max_size=5)))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | strings,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3), max_leaves=6)


def paths(value, prefix=()) -> list[tuple]:
    """Every place in a sample event a mutation may land."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return [p for key, child in children for p in [(*prefix, key), *paths(child, (*prefix, key))]]


# The fields a card shows or a button carries: half of all mutations land on one of these.
SHOWN = {
    "GuardDuty": ["detail-type", "account", "region", "detail.id", "detail.type", "detail.title", "detail.severity", "detail.accountId",
                  "detail.region", "detail.resource.resourceType", "detail.resource.instanceDetails.instanceId", "detail.resource.accessKeyDetails",
                  "detail.service.count", "detail.service.eventFirstSeen", "detail.service.eventLastSeen", "detail.createdAt"],
    "Security Hub": [f"detail.findings.0.{k}" for k in ("Id", "ProductArn", "AwsAccountId", "Region", "Types.0", "Title", "Severity.Label",
                                                       "Severity.Normalized", "Resources.0.Type", "Resources.0.Id", "FirstObservedAt", "LastObservedAt")],
}


def place(path: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in path.split("."))


SAMPLES = [(GUARDDUTY_EVENT, paths(GUARDDUTY_EVENT), [place(p) for p in SHOWN["GuardDuty"]]),
           (SECURITY_HUB_EVENT, paths(SECURITY_HUB_EVENT), [place(p) for p in SHOWN["Security Hub"]])]


@st.composite
def finding_bodies(draw) -> str:
    base, anywhere, shown_places = draw(st.sampled_from(SAMPLES))
    mutated = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        *parents, leaf = draw(st.sampled_from(shown_places) | st.sampled_from(anywhere))
        target = mutated
        try:
            for parent in parents:
                target = target[parent]
            if draw(st.integers(0, 9)) == 0:
                del target[leaf]
            elif isinstance(target[leaf], str):  # mostly another string, to reach the card rather than the dead-letter queue
                target[leaf] = draw(st.one_of(strings, strings, strings, json_values))
            else:
                target[leaf] = draw(st.one_of(strings, json_values))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation took this place away
    return json.dumps(mutated)


def check_drawn(payload: dict) -> None:
    assert unescaped(payload) == [] and over_limits(payload) == [], payload


@settings(max_examples=2000, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=finding_bodies())
def test_thousands_of_fuzzed_findings_are_read_or_refused_for_a_reason_and_drawn_escaped(body):
    """What handle() does with a body before Slack and SQS, at a speed that allows thousands: read it or refuse
    it for a stated reason (never an error irbot did not foresee), and draw every finding it reads escaped."""
    try:
        findings = parse(body)
    except MalformedFinding as exc:
        assert str(exc)
        return
    for finding in findings:
        text, blocks = messages.finding_alert(finding)
        check_drawn({"text": text, "blocks": blocks})


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bodies=st.lists(finding_bodies(), min_size=1, max_size=10))
def test_fuzzed_findings_through_the_queue_are_posted_escaped_or_dead_lettered_and_never_stop_the_consumer(consumer, queues, slack, bodies):  # noqa: F811
    sqs, main, dlq = queues
    consumer.minimum = "informational"  # so every finding irbot can read is posted
    before = len(slack.calls)
    sqs.send_message_batch(QueueUrl=main, Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    assert drain(consumer, len(bodies)) == len(bodies)  # raises nothing, and every message is done with for good
    dead = dead_letters(sqs, dlq)
    # Every dead letter says why, and no reason is the last line of defence: each field was checked on purpose.
    assert all(dead.values()) and not any(r.startswith("irbot could not read it") for r in dead.values()), dead
    drawn = [c.params for c in slack.calls[before:] if c.method in ("chat.postMessage", "chat.update")]
    assert len(drawn) >= sum(1 for b in bodies if b not in dead)  # every other message made or redrew a card
    for payload in drawn:
        check_drawn(payload)
