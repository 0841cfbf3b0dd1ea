"""Socket Mode end to end: the real `irbot serve` (SLACK_APP_TOKEN set) and `irbot worker`, driven through the
fake Slack's WebSocket with the envelopes Slack sends, as test_approval.py drives them over signed HTTP."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

import boto3
import pytest

from standins.fake_slack import FakeSlack
from tests.helpers import BOT_TOKEN, CHANNEL, RESPONDER, SECOND_RESPONDER, slash_command
from tests.processes import block_action

APP_TOKEN = "xapp-1-A0IRBOT-123456-abcdefabcdef"
SLACK_ACK_SECONDS = 3  # Slack shows the user an error for an envelope not acknowledged within this


@pytest.fixture
def slack():
    """The fake Slack with an app token, so apps.connections.open answers and its WebSocket listens."""
    fake = FakeSlack(BOT_TOKEN, app_token=APP_TOKEN).start()
    yield fake
    fake.stop()


def groups_of(instance_id: str) -> list[str]:
    found = boto3.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return [g["GroupName"] for g in found["SecurityGroups"]]


def acknowledged(slack: FakeSlack, kind: str, payload: dict, *, accepts_response_payload: bool):
    """Send one envelope and return the app's acknowledgement of it, which must come within Slack's 3 s."""
    envelope_id = slack.socket_mode.send(kind, payload, accepts_response_payload=accepts_response_payload)
    ack = slack.socket_mode.wait_for_ack(envelope_id, timeout=30)  # generous, so a slow ack fails on time, not by timeout
    assert ack.seconds < SLACK_ACK_SECONDS, f"{kind} envelope acknowledged after {ack.seconds:.2f} s"
    return ack


def test_a_slash_command_and_an_approval_over_socket_mode_isolate_the_instance(start_irbot, world, slack):
    irbot = start_irbot(SLACK_APP_TOKEN=APP_TOKEN, IR_UNTRACK_PAUSE_SECONDS="0")
    slack.socket_mode.wait_for_connections(1)
    assert slack.calls_to("apps.connections.open")

    # /ir isolate: Slack's slash_commands envelope carries the same fields as the signed POST, as an object.
    command = dict(parse_qsl(slash_command(f"isolate {world['instance']}", user=RESPONDER)))
    ack = acknowledged(slack, "slash_commands", command, accepts_response_payload=True)
    assert ack.payload and "needs approval by someone else" in ack.payload["text"]  # the reply rides on the ack
    request_id = re.search(r"request `([0-9a-f]{12})`", ack.payload["text"]).group(1)
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL)
                                          if request_id in m.get("text", "") and "Approval needed" in m["text"]), None))
    assert groups_of(world["instance"]) == ["web"]  # queued, not yet done

    # Approve, by the second responder: an interactive envelope whose payload is the block_actions object.
    click = json.loads(dict(parse_qsl(block_action(SECOND_RESPONDER, "ir_approve", request_id)))["payload"])
    acknowledged(slack, "interactive", click, accepts_response_payload=False)
    slack.wait_for(lambda s: "Done" in s.current(CHANNEL, card["ts"])["text"], timeout=60)
    assert groups_of(world["instance"]) == [f"irbot-isolation-{world['vpc']}"]

    assert slack.socket_mode.unknown == []  # everything the app sent acknowledged an envelope it was sent
    assert "Traceback" not in irbot.logs["serve"].read_text()

    # The app leaves (a deploy, a crash): the fake lets the connection go and holds on to nothing.
    irbot.processes["serve"].terminate()
    irbot.processes["serve"].wait(15)
    slack.socket_mode.wait_for_connections(0, timeout=10)
