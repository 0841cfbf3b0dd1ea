"""revoke-key: deactivate a leaked access key and quarantine its owner, the way AWS does for exposed keys."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

import boto3

from actions.artefacts import Result
from actions.aws import call, client, paginate
from actions.changes import change
from actions.cloudtrail import EventSource
from actions.context import RunContext
from actions.errors import ActionError
from actions.iam import revoke_older_sessions
from actions.registry import Need, Option, Risk, action
from actions.scopes import QUARANTINE_POLICY
from actions.steps import Outcome, StepLog

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
    "iam:GetAccessKeyLastUsed", "iam:ListAccessKeys", "iam:UpdateAccessKey", "iam:DeleteAccessKey", "iam:GetUser",
    "iam:ListAttachedUserPolicies", "iam:GetPolicy", "iam:GetPolicyVersion", "iam:AttachUserPolicy", "iam:GetLoginProfile", "iam:GetRole", "iam:GetRolePolicy",
    "iam:PutRolePolicy", "cloudtrail:LookupEvents",
)


def _normal(document: dict):
    """A policy document compared as IAM reads it: the order of a list of actions doesn't matter."""
    if isinstance(document, dict):
        return {k: _normal(v) for k, v in document.items()}
    if isinstance(document, list):
        return sorted((_normal(v) for v in document), key=json.dumps)
    return document


def quarantine_policy() -> dict:
    """The managed policy the deployment makes in every account (deploy/cloudformation), which revoke-key attaches.
    Made beforehand, and not irbot's to edit, so irbot's credentials never write a policy onto a user."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "IrbotQuarantine", "Effect": "Deny", "Action": QUARANTINED_ACTIONS, "Resource": "*"},
        # Every session made from the user's keys, before or after: temporary credentials outlive the key they came from.
        {"Sid": "IrbotNoSessions", "Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Null": {"aws:TokenIssueTime": "false"}}},
    ]}


@action("revoke-key", risk=Risk.CHANGE, scope="global", summary="Deactivate an access key and quarantine its user.", permissions=PERMISSIONS,
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

    def policy_arn() -> str:
        # The user's own account and partition: the quarantine policy is the one deployed beside it.
        _, partition, _, _, account, _ = call(iam, "get_user", UserName=owner)["User"]["Arn"].split(":", 5)
        return f"arn:{partition}:iam::{account}:policy/{QUARANTINE_POLICY}"

    def checked(arn: str) -> str:
        """The policy at ``arn``, if it says what irbot's quarantine policy says: irbot attaches a policy by its
        name, and whoever could make one of that name first must not choose what a quarantine allows."""
        try:
            version = call(iam, "get_policy", PolicyArn=arn)["Policy"]["DefaultVersionId"]
        except ActionError as exc:
            if exc.code == "NoSuchEntity":
                raise ActionError(f"the quarantine policy {QUARANTINE_POLICY} is not in this account: deploy irbot's template here "
                                  f"(deploy/cloudformation, or `irbot iam-policy --quarantine`), then run revoke-key again") from exc
            raise
        document = call(iam, "get_policy_version", PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        if isinstance(document, str):
            document = json.loads(unquote(document))
        if _normal(document) != _normal(quarantine_policy()):
            raise ActionError(f"{QUARANTINE_POLICY} in this account is not irbot's quarantine policy (it differs from "
                              f"`irbot iam-policy --quarantine`): put that policy back, then run revoke-key again")
        return arn

    def attached() -> str | None:
        found = {p["PolicyName"]: p["PolicyArn"] for p in paginate(iam, "list_attached_user_policies", "AttachedPolicies", UserName=owner)}
        if QUARANTINE_POLICY not in found:
            return None
        checked(found[QUARANTINE_POLICY])
        return f"{QUARANTINE_POLICY} is on {owner}"

    def attach() -> str:
        call(iam, "attach_user_policy", UserName=owner, PolicyArn=checked(policy_arn()))
        return f"{QUARANTINE_POLICY} attached"

    change(steps, "quarantine", f"Attach the quarantine deny policy to {owner}", dry_run=dry_run,
           plan="deny new keys, users, policies, instances, functions…, and every session made from its keys", already=attached, do=attach)

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
