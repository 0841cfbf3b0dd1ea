"""Findings from GuardDuty and Security Hub, delivered by EventBridge to SQS, posted as cards.

No finding is lost: a message is deleted only after its card is posted (or it was below the
severity threshold, or it went to the dead-letter queue for being malformed). The same finding
arriving again updates its card instead of posting another.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from actions.aws import Declaration, call
from actions.errors import ActionError
from chat import messages
from chat.slack import Slack
from core.logs import get_logger

log = get_logger(__name__)

# What the consumer may call on its queue and its dead-letter queue (see actions.aws).
FINDINGS = Declaration("irbot findings", frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                                   "sqs:GetQueueUrl", "sqs:SendMessage"}))

LEVELS = ("informational", "low", "medium", "high", "critical")


class MalformedFinding(ValueError):
    """Not a GuardDuty or Security Hub finding irbot can read; the message says why."""


@dataclass
class Finding:
    source: str  # "GuardDuty" or "Security Hub"
    id: str
    type: str
    title: str
    severity: str  # one of LEVELS
    score: float | None
    account: str
    region: str
    resource_kind: str  # instance, access-key, user, or what the finding says
    resource_id: str
    user: str
    first_seen: str
    last_seen: str
    count: int


def guardduty_level(score: float) -> str:
    # GuardDuty's bands: low 1.0-3.9, medium 4.0-6.9, high 7.0-8.9, critical 9.0 and up.
    return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"


def parse(body: str) -> list[Finding]:
    """The findings in one SQS message body (an EventBridge event)."""
    try:
        event = json.loads(body)
    except ValueError:
        raise MalformedFinding("the body is not JSON") from None
    if not isinstance(event, dict) or "detail" not in event:
        raise MalformedFinding("not an EventBridge event (no detail)")
    kind = event.get("detail-type", "")
    if kind == "GuardDuty Finding":
        return [_guardduty(event["detail"], event)]
    if kind.startswith("Security Hub Findings"):
        findings = event["detail"].get("findings")
        if not isinstance(findings, list) or not findings:
            raise MalformedFinding("a Security Hub event without findings")
        return [_security_hub(f) for f in findings]
    raise MalformedFinding(f"an event of type {kind!r}, not a GuardDuty or Security Hub finding")


def _guardduty(detail: dict, event: dict) -> Finding:
    try:
        resource = detail.get("resource") or {}
        kind, resource_id, user = resource.get("resourceType", "Unknown"), "", ""
        if resource.get("instanceDetails", {}).get("instanceId"):
            kind, resource_id = "instance", resource["instanceDetails"]["instanceId"]
        elif resource.get("accessKeyDetails", {}).get("accessKeyId"):
            details = resource["accessKeyDetails"]
            kind, resource_id, user = "access-key", details["accessKeyId"], details.get("userName", "")
        service = detail.get("service") or {}
        score = float(detail["severity"])
        return Finding("GuardDuty", detail["id"], detail["type"], detail.get("title", detail["type"]), guardduty_level(score), score,
                       detail.get("accountId", event.get("account", "")), detail.get("region", event.get("region", "")), kind, resource_id, user,
                       service.get("eventFirstSeen", detail.get("createdAt", "")), service.get("eventLastSeen", detail.get("updatedAt", "")),
                       int(service.get("count", 1)))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedFinding(f"a GuardDuty finding without {exc}") from None


ASFF_KINDS = {"AwsEc2Instance": "instance", "AwsIamAccessKey": "access-key", "AwsIamUser": "user"}


def _security_hub(finding: dict) -> Finding:
    try:
        resource = (finding.get("Resources") or [{}])[0]
        kind = ASFF_KINDS.get(resource.get("Type"), resource.get("Type", "Unknown"))
        resource_id = resource.get("Id", "")
        if kind == "instance":
            resource_id = resource_id.rsplit("/", 1)[-1]  # arn:aws:ec2:region:account:instance/i-...
        elif kind == "access-key":
            match = re.search(r"(AKIA|ASIA)[A-Z0-9]{16}", resource_id + json.dumps(resource.get("Details", {})))
            resource_id = match.group(0) if match else resource_id
        label = finding["Severity"].get("Label", "").lower()
        if label not in LEVELS:
            raise MalformedFinding(f"a Security Hub finding with severity {label!r}")
        return Finding("Security Hub", finding["Id"], (finding.get("Types") or ["Unknown"])[0], finding["Title"], label,
                       finding["Severity"].get("Normalized"), finding.get("AwsAccountId", ""), finding.get("Region", ""), kind, resource_id, "",
                       finding.get("FirstObservedAt", finding.get("CreatedAt", "")), finding.get("LastObservedAt", finding.get("UpdatedAt", "")), 1)
    except (KeyError, TypeError, AttributeError) as exc:
        raise MalformedFinding(f"a Security Hub finding without {exc}") from None


def card_key(finding_id: str) -> str:
    return f"irbot:finding:{finding_id}"


class FindingsConsumer:
    def __init__(self, sqs, queue_url: str, slack: Slack, connection: Redis, channel: str, minimum: str = "medium"):
        self.sqs, self.queue_url, self.slack, self.connection, self.channel = sqs, queue_url, slack, connection, channel
        self.minimum = minimum
        self._dlq_url: str | None = None

    def poll_once(self, wait_seconds: int = 1) -> int:
        """Receive and handle one batch; returns how many messages were handled for good."""
        received = call(self.sqs, "receive_message", QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds,
                        MessageAttributeNames=["All"]).get("Messages", [])
        return sum(1 for message in received if self.handle(message))

    def run_forever(self) -> None:
        while True:
            try:
                self.poll_once(wait_seconds=20)
            except (ActionError, RedisError) as exc:
                # Nothing was deleted that wasn't handled: wait, and take the queue up again.
                log.error("findings consumer paused", error=str(exc) or type(exc).__name__)
                time.sleep(5)

    def handle(self, message: dict) -> bool:
        try:
            findings = parse(message.get("Body", ""))
        except MalformedFinding as exc:
            try:
                self._dead_letter(message, str(exc))
            except ActionError as dlq_error:
                # No dead-letter queue to keep it in: leave it queued (SQS's own redrive may take it) and go on.
                log.error("malformed finding kept in the queue", reason=str(exc), error=str(dlq_error), message_id=message.get("MessageId"))
                return False
            log.warning("malformed finding sent to the dead-letter queue", reason=str(exc), message_id=message.get("MessageId"))
            self._delete(message)
            return True
        try:
            for finding in findings:
                self._post(finding)
        except SlackApiError as exc:
            # Not deleted: SQS shows it again after its visibility timeout, and nothing is lost.
            log.error("finding card not posted; the message stays queued", slack_error=exc.response.get("error", ""))
            return False
        self._delete(message)
        return True

    def _post(self, finding: Finding) -> None:
        if LEVELS.index(finding.severity) < LEVELS.index(self.minimum):
            log.info("finding below the threshold", finding=finding.id, type=finding.type, severity=finding.severity)
            return
        key = card_key(finding.id)
        seen = self.connection.hgetall(key)
        arrivals = int(seen.get(b"arrivals", 0)) + 1
        # GuardDuty counts the occurrences itself; for Security Hub irbot counts the arrivals.
        finding.count = max(finding.count, arrivals) if finding.source == "Security Hub" else finding.count
        text, blocks = messages.finding_alert(finding)
        if seen.get(b"ts"):
            self.slack.update(seen[b"channel"].decode(), seen[b"ts"].decode(), text, blocks, quiet=False)
        else:
            channel, ts = self.slack.post_card(self.channel, text, blocks)
            self.connection.hset(key, mapping={"ts": ts, "channel": channel})
        self.connection.hset(key, "arrivals", arrivals)
        self.connection.expire(key, 90 * 24 * 3600)
        log.info("finding posted", finding=finding.id, type=finding.type, severity=finding.severity, count=finding.count)

    def _delete(self, message: dict) -> None:
        call(self.sqs, "delete_message", QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _dead_letter(self, message: dict, reason: str) -> None:
        if self._dlq_url is None:
            attributes = call(self.sqs, "get_queue_attributes", QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
            policy = json.loads(attributes.get("RedrivePolicy") or "{}")
            if not policy.get("deadLetterTargetArn"):
                raise ActionError("the findings queue has no dead-letter queue (RedrivePolicy): a malformed message would be lost")
            self._dlq_url = call(self.sqs, "get_queue_url", QueueName=policy["deadLetterTargetArn"].rsplit(":", 1)[-1])["QueueUrl"]
        call(self.sqs, "send_message", QueueUrl=self._dlq_url, MessageBody=message.get("Body", ""),
             MessageAttributes={"irbot-reason": {"DataType": "String", "StringValue": reason[:256]}})
