"""`irbot findings`: GuardDuty and Security Hub findings from SQS (moto, over HTTP) to cards in Slack."""

from __future__ import annotations

import json
import subprocess

import boto3
import pytest
from slack_sdk import WebClient

from tests.helpers import BOT_TOKEN
from tests.processes import IRBOT
from tests.samples import guardduty, security_hub
from findings.consumer import FindingsConsumer
from findings.events import MalformedFinding, parse
from chat.slack import Slack
from core.settings import load

ALERTS = "C0ALERTS01"


@pytest.fixture
def queues(aws):
    sqs = boto3.client("sqs")
    dlq = sqs.create_queue(QueueName="irbot-findings-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    main = sqs.create_queue(QueueName="irbot-findings", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}), "VisibilityTimeout": "1"})["QueueUrl"]
    return sqs, main, dlq


@pytest.fixture
def consumer(irbot_env, queues, slack, redis_conn, monkeypatch):
    sqs, main, _ = queues
    monkeypatch.setenv("IR_FINDINGS_QUEUE_URL", main)
    monkeypatch.setenv("IR_ALERTS_CHANNEL", ALERTS)
    settings = load(__import__("os").environ, "findings")
    return FindingsConsumer(sqs, main, Slack.from_settings(settings), redis_conn, ALERTS, settings.findings_min_severity)


def queued(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def buttons(message: dict) -> list[str]:
    return [e["text"]["text"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_a_guardduty_instance_finding_becomes_a_card_with_its_buttons(consumer, queues, slack):
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    assert consumer.poll_once() == 1
    [card] = slack.messages(ALERTS)
    assert "GuardDuty finding: EC2 instance i-99999999 is querying a domain name" in card["text"]
    assert "high (8)" in card["text"] and "CryptoCurrency:EC2/BitcoinTool.B!DNS" in card["text"] and "account 123456789012, us-east-1" in card["text"]
    assert "instance `i-99999999`" in card["text"] and "first seen 2026-11-23T08:51:23Z, last seen 2026-11-23T08:58:23Z, seen once" in card["text"]
    assert buttons(card) == ["Declare incident", "Collect", "Isolate"]
    isolate = next(e for b in card["blocks"] if b["type"] == "actions" for e in b["elements"] if e["text"]["text"] == "Isolate")
    assert json.loads(isolate["value"]) == {"command": "isolate", "target": "i-99999999", "region": "us-east-1", "account": "123456789012"}
    assert queued(sqs, main) == 0


def test_a_security_hub_access_key_finding_gets_a_revoke_button(consumer, queues, slack):
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=security_hub())
    consumer.poll_once()
    [card] = slack.messages(ALERTS)
    assert card["text"].startswith("Security Hub finding: API ListBuckets was invoked") and "access-key `AKIAIOSFODNN7EXAMPLE`" in card["text"]
    assert buttons(card) == ["Declare incident", "Revoke key"]


def test_the_same_finding_again_updates_its_card(consumer, queues, slack):
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    consumer.poll_once()
    sqs.send_message(QueueUrl=main, MessageBody=guardduty(service__count=7, service__eventLastSeen="2026-11-23T10:15:00Z"))
    consumer.poll_once()
    [card] = slack.messages(ALERTS)
    now = slack.current(ALERTS, card["ts"])["text"]
    assert "last seen 2026-11-23T10:15:00Z, seen 7 times" in now
    assert len(slack.calls_to("chat.update")) == 1 and queued(sqs, main) == 0


def test_findings_below_the_threshold_are_consumed_not_posted(consumer, queues, slack):
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=guardduty(severity=2.0))
    assert consumer.poll_once() == 1
    assert slack.messages(ALERTS) == [] and queued(sqs, main) == 0


def test_a_malformed_message_goes_to_the_dead_letter_queue_and_the_consumer_goes_on(consumer, queues, slack):
    sqs, main, dlq = queues
    sqs.send_message(QueueUrl=main, MessageBody="{not json")
    sqs.send_message(QueueUrl=main, MessageBody=json.dumps({"detail-type": "EC2 Instance State-change Notification", "detail": {}}))
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    while consumer.poll_once():
        pass
    assert len(slack.messages(ALERTS)) == 1
    dead = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    reasons = sorted(m["MessageAttributes"]["irbot-reason"]["StringValue"] for m in dead)
    assert reasons == ["an event of type 'EC2 Instance State-change Notification', not a GuardDuty or Security Hub finding", "the body is not JSON"]
    assert queued(sqs, main) == 0


def test_slack_rate_limits_are_waited_out_and_nothing_is_lost(consumer, queues, slack):
    sqs, main, _ = queues
    slack.rate_limit("chat.postMessage", 1)
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    consumer.poll_once()
    assert len(slack.calls_to("chat.postMessage:rate-limited")) == 1
    assert len(slack.messages(ALERTS)) == 1 and queued(sqs, main) == 0


def test_a_card_slack_refuses_leaves_the_message_queued(consumer, queues, slack):
    sqs, main, _ = queues
    slack.outside_channels.add(ALERTS)  # Slack answers not_in_channel
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    assert consumer.poll_once() == 0
    assert queued(sqs, main) == 1  # it comes back after the visibility timeout
    slack.outside_channels.clear()
    import time

    time.sleep(1.5)
    assert consumer.poll_once(wait_seconds=2) == 1 and len(slack.messages(ALERTS)) == 1


def test_findings_parser_names_what_is_wrong():
    with pytest.raises(MalformedFinding, match="a GuardDuty finding without 'severity'"):
        event = json.loads(guardduty())
        del event["detail"]["severity"]
        parse(json.dumps(event))
    assert parse(guardduty())[0].severity == "high"
    assert parse(guardduty(severity=9.5))[0].severity == "critical"


def test_irbot_findings_once_runs_as_a_command(irbot_env, queues, slack):
    sqs, main, _ = queues
    sqs.send_message(QueueUrl=main, MessageBody=guardduty())
    env = {**irbot_env, "IR_FINDINGS_QUEUE_URL": main, "IR_ALERTS_CHANNEL": ALERTS, "PATH": __import__("os").environ["PATH"]}
    result = subprocess.run([IRBOT, "findings", "--once"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert len(slack.messages(ALERTS)) == 1 and queued(sqs, main) == 0
    assert BOT_TOKEN not in result.stderr
