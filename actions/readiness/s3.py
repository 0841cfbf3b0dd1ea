"""S3: the account's Block Public Access, and each bucket's exposure, versioning, encryption and access logs.

Counts and the worst offenders, never a line per bucket: an account may hold hundreds. Versioning and logging
count as on exactly when S3 says so (Status "Enabled", a LoggingEnabled target): the old ThreatPrep read them
the wrong way round."""

from __future__ import annotations

from typing import Callable

from actions.aws import call
from actions.errors import ActionError, reason
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed, unknown
from actions.words import count

LIST = ("s3:ListAllMyBuckets",)
PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers", "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
PUBLIC_CALLS = ("s3:GetBucketPolicyStatus", "s3:GetBucketAcl")
BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


def public_reason(s3, bucket: str) -> str | None:
    """Why ``bucket`` is public (a policy S3 calls public, or an ACL grant to everyone), None when it isn't."""
    try:
        if call(s3, "get_bucket_policy_status", Bucket=bucket)["PolicyStatus"].get("IsPublic"):
            return "public bucket policy"
    except ActionError as exc:
        if exc.code != "NoSuchBucketPolicy":
            raise
    grants = call(s3, "get_bucket_acl", Bucket=bucket).get("Grants", [])
    if any(g.get("Grantee", {}).get("URI") in PUBLIC_GROUPS for g in grants):
        return "ACL grants everyone access"
    return None


def logging_off(s3, bucket: str) -> str | None:
    return None if call(s3, "get_bucket_logging", Bucket=bucket).get("LoggingEnabled") else "no access logging"


def versioning_off(s3, bucket: str) -> str | None:
    status = call(s3, "get_bucket_versioning", Bucket=bucket).get("Status")
    return None if status == "Enabled" else ("versioning suspended" if status == "Suspended" else "versioning never enabled")


def encryption_off(s3, bucket: str) -> str | None:
    try:
        rules = call(s3, "get_bucket_encryption", Bucket=bucket)["ServerSideEncryptionConfiguration"].get("Rules", [])
    except ActionError as exc:
        if exc.code == "ServerSideEncryptionConfigurationNotFoundError":
            return "no default encryption"
        raise
    return None if rules else "no default encryption"


def over_buckets(probe: Probe, wrong: Callable[[object, str], str | None], what: str) -> Verdict:
    """``wrong`` asked of every bucket of the account: fails naming the worst few, counts the rest; buckets S3 wouldn't
    describe make it "couldn't check" when nothing failed (a failure is a failure whatever else couldn't be read)."""
    s3 = probe.client("s3")
    buckets = [b["Name"] for b in call(s3, "list_buckets").get("Buckets", [])]
    bad, unreadable = [], []
    for bucket in buckets:
        try:
            why = wrong(s3, bucket)
        except ActionError as exc:
            unreadable.append(f"{bucket} ({reason(exc)})")
            continue
        if why:
            bad.append(f"{bucket}: {why}")
    if bad:
        return failed(f"{count(len(bad), 'bucket')} of {len(buckets)} {what}" +
                      (f"; {count(len(unreadable), 'bucket')} couldn't be read" if unreadable else ""), bad)
    if unreadable:
        return unknown(f"{count(len(unreadable), 'bucket')} of {len(buckets)} couldn't be read", unreadable)
    return passed(f"none of {count(len(buckets), 'bucket')} {what}")


@check("s3-account-block", "S3 Block Public Access on for the account", area="S3", scope=Scope.ACCOUNT,
       permissions=("s3:GetAccountPublicAccessBlock",),
       fix="Turn on all four Block Public Access settings for the account (S3 console → Block Public Access settings for this account).")
def account_block(probe: Probe) -> Verdict:
    try:
        settings = call(probe.client("s3control"), "get_public_access_block", AccountId=probe.account)["PublicAccessBlockConfiguration"]
    except ActionError as exc:
        if exc.code == "NoSuchPublicAccessBlockConfiguration":
            return failed("the account has no Block Public Access settings")
        raise
    off = [name for name in BLOCKS if not settings.get(name)]
    return failed(f"{', '.join(off)} off", off) if off else passed("all four settings on")


@check("s3-public", "No bucket public by policy or ACL", area="S3", scope=Scope.ACCOUNT, permissions=(*LIST, *PUBLIC_CALLS),
       fix="Remove the public statement or grant, or turn on Block Public Access for the bucket.")
def public_buckets(probe: Probe) -> Verdict:
    return over_buckets(probe, public_reason, "public")


@check("s3-versioning", "Every bucket versioned", area="S3", scope=Scope.ACCOUNT, permissions=(*LIST, "s3:GetBucketVersioning"),
       fix="Enable versioning on each bucket listed, so an overwrite or a delete can be undone and seen.")
def versioning(probe: Probe) -> Verdict:
    return over_buckets(probe, versioning_off, "without versioning")


@check("s3-encryption", "Every bucket encrypted by default", area="S3", scope=Scope.ACCOUNT,
       permissions=(*LIST, "s3:GetEncryptionConfiguration"),
       fix="Set default encryption (SSE-S3 or SSE-KMS) on each bucket listed.")
def encryption(probe: Probe) -> Verdict:
    return over_buckets(probe, encryption_off, "without default encryption")


@check("s3-logging", "Every bucket logs access", area="S3", scope=Scope.ACCOUNT, permissions=(*LIST, "s3:GetBucketLogging"),
       fix="Turn on server access logging (or CloudTrail data events) for each bucket listed, so a read can be traced.")
def access_logging(probe: Probe) -> Verdict:
    return over_buckets(probe, logging_off, "without access logging")
