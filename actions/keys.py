"""revoke-key: deactivate a leaked access key and quarantine its owner, the way AWS does for exposed keys."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3

from actions.artefacts import Result
from actions.aws import call, client, paginate
from actions.changes import change
from actions.cloudtrail import EventSource
from actions.context import RunContext
from actions.errors import ActionError
from actions.iam import cutoff_time, revoke_older_sessions, session_cutoff
from actions.registry import Need, Option, Risk, action
from actions.steps import Outcome, StepLog

QUARANTINE_POLICY = "irbot-quarantine"
# Modelled on AWS's compromised-key quarantine policy: no new keys, users, logins, policies or
# roles; no instances, functions or accounts; nothing that would undo the quarantine itself.
QUARANTINED_ACTIONS = sorted({
    "iam:AttachGroupPolicy", "iam:AttachRolePolicy", "iam:AttachUserPolicy", "iam:ChangePassword", "iam:CreateAccessKey",
    "iam:CreateInstanceProfile", "iam:CreateLoginProfile", "iam:CreatePolicy", "iam:CreatePolicyVersion", "iam:CreateRole",
    "iam:CreateUser", "iam:DeleteUserPolicy", "iam:DetachUserPolicy", "iam:PassRole", "iam:PutGroupPolicy", "iam:PutRolePolicy",
    "iam:PutUserPermissionsBoundary", "iam:PutUserPolicy", "iam:UpdateAccessKey", "iam:UpdateAssumeRolePolicy",
    "iam:UpdateLoginProfile", "iam:AddUserToGroup", "ec2:RunInstances", "ec2:RequestSpotInstances", "ec2:CreateKeyPair",
    "ec2:ImportKeyPair", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "lambda:CreateFunction",
    "lambda:UpdateFunctionCode", "lambda:AddPermission", "organizations:CreateAccount", "organizations:InviteAccountToOrganization",
    "sts:GetFederationToken", "s3:PutBucketPolicy", "s3:PutBucketAcl", "lightsail:Create*", "ecs:RunTask", "batch:SubmitJob",
})
PERMISSIONS = (
    "iam:GetAccessKeyLastUsed", "iam:ListAccessKeys", "iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:GetUserPolicy",
    "iam:PutUserPolicy", "iam:GetLoginProfile", "iam:GetRole", "iam:GetRolePolicy", "iam:PutRolePolicy", "cloudtrail:LookupEvents",
)


def quarantine_policy(now: datetime) -> dict:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "IrbotQuarantine", "Effect": "Deny", "Action": QUARANTINED_ACTIONS, "Resource": "*"},
        {"Sid": "IrbotRevokeIssuedSessions", "Effect": "Deny", "Action": "*", "Resource": "*",
         "Condition": {"DateLessThan": {"aws:TokenIssueTime": now.strftime("%Y-%m-%dT%H:%M:%SZ")}}},
    ]}


@action("revoke-key", risk=Risk.CHANGE, summary="Deactivate an access key and quarantine its user.", permissions=PERMISSIONS,
        target="access-key", extra_options=(Option("--delete", says="and DELETE the key: it can't be made active again"),), needs=(Need.EVENTS,), card_state="revoked")
def revoke_key(session: boto3.Session, key_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
               delete: bool = False) -> Result:
    iam = client(session, "iam", region)
    result = Result("revoke-key", key_id, region)
    if key_id.startswith("ASIA"):
        _temporary(session, iam, key_id, region, steps, dry_run, context.events, result, context)
    else:
        _long_term(iam, key_id, steps, dry_run, delete, result, context)
    result.steps = steps.steps
    return result


def _owner(iam, key_id: str) -> str:
    try:
        owner = call(iam, "get_access_key_last_used", AccessKeyId=key_id).get("UserName")
    except ActionError as exc:
        raise ActionError(f"Access key {key_id} is not a key of this AWS account (or irbot may not read it): {exc}") from exc
    if not owner:
        raise ActionError(f"Access key {key_id} belongs to no IAM user of this account (a root key must be handled in the console).")
    return owner


def _long_term(iam, key_id: str, steps: StepLog, dry_run: bool, delete: bool, result: Result, context: RunContext) -> None:
    owner = _owner(iam, key_id)
    steps.add("owner", "Find the key's owner", Outcome.DONE, f"IAM user {owner}")
    result.facts["user"] = owner

    def keys() -> dict[str, dict]:
        return {k["AccessKeyId"]: k for k in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=owner)}

    change(steps, "deactivate", f"Deactivate {key_id} (kept, so CloudTrail can still be searched for it)", dry_run=dry_run,
           plan="status → Inactive", skip=lambda: None if key_id in keys() else "the key is deleted already",
           already=lambda: "it is inactive" if keys()[key_id]["Status"] == "Inactive" else None,
           do=lambda: call(iam, "update_access_key", UserName=owner, AccessKeyId=key_id, Status="Inactive"), done="Inactive")

    cutoff = datetime.fromisoformat(context.started_at).astimezone(timezone.utc)

    def has_policy() -> str | None:
        # Already so only if the policy there denies sessions issued up to this request: an older
        # cutoff (an earlier revocation) lets sessions issued since then live, so it is renewed.
        found = session_cutoff(iam, "get_user_policy", UserName=owner, PolicyName=QUARANTINE_POLICY)
        if found is None:
            return None
        return f"{QUARANTINE_POLICY} is on {owner}, denying sessions issued before {found}" if found >= cutoff_time(context.started_at) else None

    change(steps, "quarantine", f"Attach the quarantine deny policy to {owner}", dry_run=dry_run,
           plan="deny new keys, users, policies, instances, functions…, and every session issued before now", already=has_policy,
           do=lambda: call(iam, "put_user_policy", UserName=owner, PolicyName=QUARANTINE_POLICY,
                           PolicyDocument=json.dumps(quarantine_policy(cutoff))),
           done=f"{QUARANTINE_POLICY} attached")

    try:
        others = [k for k, meta in keys().items() if k != key_id and meta["Status"] == "Active"]
        try:
            call(iam, "get_login_profile", UserName=owner)
            console = "has a console password"
        except ActionError as exc:
            if exc.code != "NoSuchEntity":
                raise
            console = "has no console password"
        detail = f"{owner} {console}; other active keys: {', '.join(others) or 'none'}"
        steps.add("other-ways-in", f"Check {owner}'s other ways in", Outcome.DONE, detail)
        if others or console.startswith("has a"):
            result.notes.append(f"Decide on {owner}'s other ways in: {detail}. irbot left them as they are.")
    except ActionError as exc:
        steps.add("other-ways-in", f"Check {owner}'s other ways in", Outcome.FAILED, str(exc))

    if delete:
        change(steps, "delete", f"Delete {key_id}", dry_run=dry_run, plan="delete the key (its ID stays in CloudTrail)",
               already=lambda: None if key_id in keys() else "deleted",
               do=lambda: call(iam, "delete_access_key", UserName=owner, AccessKeyId=key_id), done="deleted")


def _temporary(session, iam, key_id: str, region: str, steps: StepLog, dry_run: bool, events: EventSource | None, result: Result,
               context: RunContext) -> None:
    """An ASIA key is a role session: find the role in CloudTrail and revoke its older sessions."""
    if events is None:
        steps.add("owner", "Find the role session", Outcome.FAILED, "no CloudTrail event source")
        return
    try:
        found = events.lookup(session, region, key_id, datetime.now(timezone.utc) - timedelta(days=90))
    except ActionError as exc:
        steps.add("owner", "Find the role session", Outcome.FAILED, str(exc))
        return
    issuers = {e["event"].get("userIdentity", {}).get("sessionContext", {}).get("sessionIssuer", {}).get("userName") for e in found}
    issuers.discard(None)
    if not issuers:
        steps.add("owner", "Find the role session", Outcome.FAILED,
                  f"CloudTrail in {region} has no event of {key_id} naming its role; try --region where it was used")
        return
    steps.add("owner", "Find the role session", Outcome.DONE, f"sessions of role {', '.join(sorted(issuers))}")
    result.notes.append("A temporary key can't be deactivated: its role's sessions issued before now are revoked instead, for every user of the role.")
    for role in sorted(issuers):
        revoke_older_sessions(iam, role, dry_run, steps, since=context.started_at)
