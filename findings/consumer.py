"""Findings from GuardDuty and Security Hub, delivered by EventBridge to SQS, posted as cards.

No finding is lost: a message is deleted only after its card is posted (or it was below the
severity threshold, or it went to the dead-letter queue, with the reason, for being a message irbot
can't read or draw). No message stops the consumer. The same finding arriving again updates its
card instead of posting another. What a finding says is read by findings.events, trusting none of it.
"""

from __future__ import annotations

import hashlib
import json
import time

from redis import Redis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError

from actions.aws import Declaration, call
from actions.errors import ActionError
from chat import messages
from chat.slack import Slack
from core import latest_findings
from core.logs import get_logger
from findings.events import LEVELS, Finding, MalformedFinding, parse

log = get_logger(__name__)

# What the consumer may call on its queue and its dead-letter queue (see actions.aws).
FINDINGS = Declaration("irbot findings", frozenset({"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                                                   "sqs:GetQueueUrl", "sqs:SendMessage"}))


def queue_region(queue_url: str, default: str | None) -> str | None:
    """The region of an SQS queue URL (https://sqs.<region>.amazonaws.com/...); ``default`` for any other URL (a test's)."""
    return queue_url.split(".")[1] if ".amazonaws.com" in queue_url else default


def dead_letter_queue(sqs, queue_url: str) -> str | None:
    """The URL of ``queue_url``'s dead-letter queue, from its RedrivePolicy (resolved, so it exists); None when it has none.
    The consumer sends what it can't read there; ``irbot doctor`` checks there is one."""
    attributes = call(sqs, "get_queue_attributes", QueueUrl=queue_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    policy = json.loads(attributes.get("RedrivePolicy") or "{}")
    if not policy.get("deadLetterTargetArn"):
        return None
    return call(sqs, "get_queue_url", QueueName=policy["deadLetterTargetArn"].rsplit(":", 1)[-1])["QueueUrl"]


def card_key(finding: Finding) -> str:
    """Where a finding's card is remembered. Security Hub lets anyone import a finding with any Id, so the
    Id alone would let a custom finding take over a GuardDuty card: the source, product and account are
    part of the key, hashed so that no choice of Id can make two findings' keys meet."""
    who = json.dumps([finding.source, finding.product, finding.account, finding.id])
    return f"irbot:finding:{hashlib.sha256(who.encode()).hexdigest()}"


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
            except Exception as exc:  # noqa: BLE001
                # Whatever else went wrong, the consumer outlives it: what wasn't deleted comes back, and the
                # queue's own redrive has the last word on a message that keeps failing. The type only: the
                # text of an unexpected error may quote the finding.
                log.error("findings consumer paused", error=type(exc).__name__)
                time.sleep(5)

    def handle(self, message: dict) -> bool:
        """One message: its cards posted, or the message dead-lettered with the reason. True when done with for good."""
        try:
            findings = parse(message.get("Body", ""))
            for finding in findings:
                # Drawn once before anything is posted, so a message irbot can't draw goes whole to the dead-letter queue.
                messages.finding_alert(finding)
        except MalformedFinding as exc:
            return self._reject(message, str(exc))
        except Exception as exc:  # noqa: BLE001
            # The last line of defence: no message may stop the consumer. Logged by its type, never with the body
            # or the error's text, which are the attacker's words.
            log.error("finding unreadable", error=type(exc).__name__, message_id=message.get("MessageId"))
            return self._reject(message, f"irbot could not read it: {type(exc).__name__}")
        try:
            for finding in findings:
                self._post(finding)
        except SlackApiError as exc:
            # Not deleted: SQS shows it again after its visibility timeout, and nothing is lost.
            log.error("finding card not posted; the message stays queued", slack_error=exc.response.get("error", ""))
            return False
        self._delete(message)
        return True

    def _reject(self, message: dict, reason: str) -> bool:
        try:
            self._dead_letter(message, reason)
        except ActionError as dlq_error:
            # No dead-letter queue to keep it in: leave it queued (SQS's own redrive may take it) and go on.
            log.error("malformed finding kept in the queue", reason=reason, error=str(dlq_error), message_id=message.get("MessageId"))
            return False
        log.warning("malformed finding sent to the dead-letter queue", reason=reason, message_id=message.get("MessageId"))
        self._delete(message)
        return True

    def _post(self, finding: Finding) -> None:
        if LEVELS.index(finding.severity) < LEVELS.index(self.minimum):
            log.info("finding below the threshold", finding=finding.id, type=finding.type, severity=finding.severity)
            return
        key = card_key(finding)
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
        # Already checked and cut by findings.events; the Home tab escapes each as it shows it.
        latest_findings.note(self.connection, key, {"title": finding.title, "severity": finding.severity, "source": finding.source,
                                                    "account": finding.account, "region": finding.region, "kind": finding.resource_kind,
                                                    "resource": finding.resource_id, "last_seen": finding.last_seen})
        self.connection.expire(key, 90 * 24 * 3600)
        log.info("finding posted", finding=finding.id, type=finding.type, severity=finding.severity, count=finding.count)

    def _delete(self, message: dict) -> None:
        call(self.sqs, "delete_message", QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _dead_letter(self, message: dict, reason: str) -> None:
        if self._dlq_url is None:
            self._dlq_url = dead_letter_queue(self.sqs, self.queue_url)
            if self._dlq_url is None:
                raise ActionError("the findings queue has no dead-letter queue (RedrivePolicy): a malformed message would be lost")
        call(self.sqs, "send_message", QueueUrl=self._dlq_url, MessageBody=message.get("Body", ""),
             MessageAttributes={"irbot-reason": {"DataType": "String", "StringValue": reason[:256]}})
