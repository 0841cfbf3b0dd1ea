"""CloudTrail: a multi-region trail logging management events, its log files validated, its bucket private and logged.

Validation is read from the trail's own LogFileValidationEnabled (ThreatPrep's check of it always failed)."""

from __future__ import annotations

from actions.aws import call
from actions.readiness import s3
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.words import count

DESCRIBE = ("cloudtrail:DescribeTrails",)


def trails(probe: Probe) -> list[dict]:
    """Every trail the account has, wherever its home region (a multi-region trail shows in each region once)."""
    found = call(probe.client("cloudtrail"), "describe_trails", includeShadowTrails=True).get("trailList", [])
    return list({t["TrailARN"]: t for t in found}.values())


def logs_management_events(probe: Probe, trail: dict) -> bool:
    if not trail.get("HasCustomEventSelectors"):
        return True  # a trail's default selector logs every management event, read and write
    selectors = call(probe.client("cloudtrail", trail.get("HomeRegion")), "get_event_selectors", TrailName=trail["TrailARN"])
    basic = any(s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") == "All" for s in selectors.get("EventSelectors") or [])
    advanced = any(f.get("Field") == "eventCategory" and "Management" in f.get("Equals", [])
                   for s in selectors.get("AdvancedEventSelectors") or [] for f in s.get("FieldSelectors", []))
    return basic or advanced


@check("trail", "A multi-region trail logs management events", area="CloudTrail", scope=Scope.ACCOUNT,
       permissions=(*DESCRIBE, "cloudtrail:GetTrailStatus", "cloudtrail:GetEventSelectors"),
       fix="Create a multi-region trail (or an organization trail) logging read and write management events, and start its logging.")
def trail(probe: Probe) -> Verdict:
    multi = [t for t in trails(probe) if t.get("IsMultiRegionTrail")]
    if not multi:
        return failed("no multi-region trail")
    wrong = []
    for found in multi:
        status = call(probe.client("cloudtrail", found.get("HomeRegion")), "get_trail_status", Name=found["TrailARN"])
        if not status.get("IsLogging"):
            wrong.append(f"{found['Name']}: logging is off")
        elif not logs_management_events(probe, found):
            wrong.append(f"{found['Name']}: doesn't log all management events")
        else:
            return passed(f"{found['Name']} logs management events in every region")
    return failed("no multi-region trail is logging all management events", wrong)


@check("trail-validation", "CloudTrail log-file validation on", area="CloudTrail", scope=Scope.ACCOUNT, permissions=DESCRIBE,
       fix="Turn on log-file validation for each trail listed (`aws cloudtrail update-trail --name NAME --enable-log-file-validation`), "
           "so a changed or deleted log file can be proven.")
def validation(probe: Probe) -> Verdict | None:
    found = trails(probe)
    if not found:
        return None  # the trail check fails already: nothing to validate
    off = [t["Name"] for t in found if not t.get("LogFileValidationEnabled")]
    if off:
        return failed(f"{count(len(off), 'trail')} of {len(found)} without log-file validation", off)
    return passed(f"on for {count(len(found), 'trail')}")


@check("trail-bucket", "CloudTrail's buckets private and logging access", area="CloudTrail", scope=Scope.ACCOUNT,
       permissions=(*DESCRIBE, *s3.PUBLIC_CALLS, "s3:GetBucketLogging"),
       fix="Make each trail's bucket private (no public policy or ACL; Block Public Access on) and turn on its server access logging.")
def trail_bucket(probe: Probe) -> Verdict | None:
    buckets = sorted({t["S3BucketName"] for t in trails(probe) if t.get("S3BucketName")})
    if not buckets:
        return None
    client = probe.client("s3")
    wrong = [f"{bucket}: {why}" for bucket in buckets
             for why in (s3.public_reason(client, bucket), s3.logging_off(client, bucket)) if why]
    if wrong:
        return failed(f"{count(len(wrong), 'problem')} with {count(len(buckets), 'trail bucket')}", wrong)
    return passed(f"{count(len(buckets), 'trail bucket')} private and logging access")
