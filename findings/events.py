"""One SQS message body (an EventBridge event) read into Findings, trusting nothing in it.

Anyone allowed securityhub:BatchImportFindings writes every field of a finding, so each field is
checked here for its type and shape before anything is drawn from it. A message that fails is a
MalformedFinding whose reason goes with it to the dead-letter queue; free text is cleaned of
control characters and cut to a length a card can show.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass

LEVELS = ("informational", "low", "medium", "high", "critical")

MAX_TEXT = 300  # a title, a type, a user name, a time (ASFF allows 256 characters for a title)
MAX_KIND = 64  # a resource type such as AwsEc2Instance
MAX_ID = 512  # ASFF's limit for Id and ProductArn
MAX_FINDINGS = 100  # BatchImportFindings' own limit per call: an event with more is not one AWS sent
MAX_COUNT = 2**31  # GuardDuty's occurrence count; a larger one is not GuardDuty's
ACCOUNT = re.compile(r"\d{12}")
REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
ACCESS_KEY_IN_TEXT = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
ASFF_KINDS = {"AwsEc2Instance": "instance", "AwsIamAccessKey": "access-key", "AwsIamUser": "user"}


class MalformedFinding(ValueError):
    """Not a GuardDuty or Security Hub finding irbot can read; the message says why."""


@dataclass
class Finding:
    source: str  # "GuardDuty" or "Security Hub"
    product: str  # "GuardDuty", or the Security Hub ProductArn it was imported as
    id: str
    type: str
    title: str
    severity: str  # one of LEVELS
    score: float | None
    account: str  # 12 digits, or "" when the event names none
    region: str  # shaped like a region, or ""
    resource_kind: str  # instance, access-key, user, or what the finding says
    resource_id: str
    user: str
    first_seen: str
    last_seen: str
    count: int


def parse(body: str) -> list[Finding]:
    """The findings in one SQS message body; raises MalformedFinding naming what is wrong."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python will follow
        raise MalformedFinding("the body is not JSON") from None
    if not isinstance(event, dict) or "detail" not in event:
        raise MalformedFinding("not an EventBridge event (no detail)")
    envelope = Fields(event, "an EventBridge event")
    kind = envelope.text("detail-type", "")
    detail = envelope.object("detail")
    if kind == "GuardDuty Finding":
        return [_guardduty(Fields(detail.value, "a GuardDuty finding"), envelope)]
    if kind.startswith("Security Hub Findings"):
        findings = detail.value.get("findings")
        if not isinstance(findings, list) or not findings:
            raise MalformedFinding("a Security Hub event without findings")
        if len(findings) > MAX_FINDINGS:
            raise MalformedFinding(f"a Security Hub event with {len(findings)} findings (AWS sends at most {MAX_FINDINGS})")
        return [_security_hub(f) for f in findings]
    raise MalformedFinding(f"an event of type {_quote(kind)}, not a GuardDuty or Security Hub finding")


def guardduty_level(score: float) -> str:
    # GuardDuty's bands: low 1.0-3.9, medium 4.0-6.9, high 7.0-8.9, critical 9.0 and up.
    return "critical" if score >= 9 else "high" if score >= 7 else "medium" if score >= 4 else "low"


def _guardduty(detail: Fields, envelope: Fields) -> Finding:
    resource = detail.object("resource")
    kind, resource_id, user = resource.text("resourceType", "Unknown", MAX_KIND), "", ""
    instance_id = resource.object("instanceDetails").text("instanceId", "", MAX_ID)
    key = resource.object("accessKeyDetails")
    if instance_id:
        kind, resource_id = "instance", instance_id
    elif key.text("accessKeyId", "", MAX_ID):
        kind, resource_id, user = "access-key", key.text("accessKeyId", "", MAX_ID), key.text("userName", "")
    service = detail.object("service")
    score = detail.number("severity", 0, 10)
    kind_of_finding = detail.text("type")
    return Finding("GuardDuty", "GuardDuty", detail.identifier("id"), kind_of_finding, detail.text("title", kind_of_finding),
                   guardduty_level(score), score,
                   detail.matching("accountId", ACCOUNT, "a 12-digit account ID", envelope.matching("account", ACCOUNT, "a 12-digit account ID", "")),
                   detail.matching("region", REGION, "a region", envelope.matching("region", REGION, "a region", "")),
                   kind, resource_id, user,
                   service.text("eventFirstSeen", detail.text("createdAt", "")), service.text("eventLastSeen", detail.text("updatedAt", "")),
                   int(service.number("count", 0, MAX_COUNT, default=1, whole=True)))


def _security_hub(value) -> Finding:
    if not isinstance(value, dict):
        raise MalformedFinding("a Security Hub finding that is not an object")
    finding = Fields(value, "a Security Hub finding")
    resources = finding.list("Resources")
    resource = Fields(resources[0] if resources else {}, "a Security Hub finding", "Resources[0]", check=True)
    resource_type = resource.text("Type", "Unknown", MAX_KIND)
    kind = ASFF_KINDS.get(resource_type, resource_type)
    resource_id = resource.text("Id", "", MAX_ID)
    if kind == "instance":
        resource_id = resource_id.rsplit("/", 1)[-1]  # arn:aws:ec2:region:account:instance/i-...
    elif kind == "access-key":
        details = resource.object("Details")
        match = ACCESS_KEY_IN_TEXT.search(resource_id + json.dumps(details.value))
        resource_id = match.group(0) if match else resource_id
    severity = finding.object("Severity", required=True)
    label = severity.text("Label", "").lower()
    if label not in LEVELS:
        raise MalformedFinding(f"a Security Hub finding with severity {_quote(label)}")
    types = finding.list("Types")
    if types and not isinstance(types[0], str):
        raise MalformedFinding("a Security Hub finding whose Types[0] is not a string")
    return Finding("Security Hub", finding.identifier("ProductArn"), finding.identifier("Id"), clean(types[0] if types else "Unknown", MAX_TEXT),
                   finding.text("Title"), label, severity.number("Normalized", 0, 100, default=None),
                   finding.matching("AwsAccountId", ACCOUNT, "a 12-digit account ID", ""), finding.matching("Region", REGION, "a region", ""),
                   kind, resource_id, "",
                   finding.text("FirstObservedAt", finding.text("CreatedAt", "")), finding.text("LastObservedAt", finding.text("UpdatedAt", "")), 1)


class Fields:
    """A JSON object from a finding, read one checked field at a time. A field of the wrong kind is a
    MalformedFinding that names it; an absent or null field is its default, or a MalformedFinding when it has none."""

    def __init__(self, value, where: str, path: str = "", *, check: bool = False):
        if check and not isinstance(value, dict):
            raise MalformedFinding(f"{where} whose {path} is not an object")
        self.value, self.where, self.prefix = value, where, f"{path}." if path else ""

    def _get(self, key: str, required: bool):
        value = self.value.get(key)
        if value is None and required:
            raise MalformedFinding(f"{self.where} without {key!r}")
        return value

    def _wrong(self, key: str, what: str) -> MalformedFinding:
        return MalformedFinding(f"{self.where} whose {self.prefix}{key} is not {what}")

    def object(self, key: str, *, required: bool = False) -> Fields:
        value = self._get(key, required)
        return Fields({} if value is None else value, self.where, self.prefix + key, check=True)

    def list(self, key: str) -> list:
        value = self._get(key, False)
        if value is not None and not isinstance(value, list):
            raise self._wrong(key, "a list")
        return value or []

    def text(self, key: str, default: str | None = None, limit: int = MAX_TEXT) -> str:
        """Free text to show: cleaned and cut to ``limit``."""
        value = self._get(key, default is None)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return clean(value, limit)

    def identifier(self, key: str) -> str:
        """An ID cards are told apart by: taken whole or refused, never cut or cleaned into another."""
        value = self._get(key, True)
        if not isinstance(value, str) or not value or len(value) > MAX_ID or not value.isprintable():
            raise self._wrong(key, f"an ID of at most {MAX_ID} printable characters")
        return value

    def matching(self, key: str, pattern: re.Pattern, what: str, default: str) -> str:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self._wrong(key, what)
        return value

    def number(self, key: str, low: int, high: int, *, default=..., whole: bool = False):
        value = self._get(key, default is ...)
        if value is None:
            return default
        # The range is checked before anything converts: NaN fails it, and an integer too large for a float never reaches one.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high or (whole and value != int(value)):
            raise self._wrong(key, f"a {'whole ' if whole else ''}number from {low} to {high}")
        return float(value)


def clean(text: str, limit: int) -> str:
    """Text fit to show: control and format characters (newlines, bidi overrides, lone surrogates) become
    spaces, runs of space become one, and it is cut to ``limit`` characters."""
    shown = " ".join("".join(" " if unicodedata.category(c).startswith("C") else c for c in text).split())
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def _quote(text: str) -> str:
    """Some of a value, quoted, for a reason that names it: short, and with every control character escaped."""
    return repr(text if len(text) <= 60 else text[:60] + "…")
