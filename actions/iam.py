"""IAM helpers of the containment actions: inline deny policies that cut off sessions issued
before a moment (aws:TokenIssueTime)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from actions.aws import call
from actions.changes import change
from actions.errors import ActionError
from actions.steps import StepLog

REVOKE_POLICY = "irbot-revoke-older-sessions"


def cutoff_time(iso: str) -> str:
    """An ISO time as IAM's conditions want it: 2026-11-23T14:02:11Z."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_cutoff(iam, operation: str, **params) -> str | None:
    """The TokenIssueTime cutoff of the inline policy ``operation`` (get_role_policy or get_user_policy)
    reads, or None when there is no such policy."""
    try:
        document = call(iam, operation, **params)["PolicyDocument"]
    except ActionError as exc:
        if exc.code == "NoSuchEntity":
            return None
        raise
    if isinstance(document, str):
        document = json.loads(document)
    return next((s["Condition"]["DateLessThan"]["aws:TokenIssueTime"] for s in document.get("Statement", [])
                 if "aws:TokenIssueTime" in s.get("Condition", {}).get("DateLessThan", {})), "")


def revoke_older_sessions(iam, role_name: str, dry_run: bool, steps: StepLog, *, since: str, name: str = "revoke-sessions") -> None:
    """An inline deny-all for the role's sessions issued before ``since`` (this request's start).

    A policy left by an earlier incident has an older cutoff: it is moved forward, or sessions
    issued between the two incidents would stay valid."""

    def skip() -> str | None:
        role = call(iam, "get_role", RoleName=role_name)["Role"]
        return "a service-linked role can't be changed" if role.get("Path", "").startswith("/aws-service-role/") else None

    cutoff = cutoff_time(since)

    def already() -> str | None:
        found = session_cutoff(iam, "get_role_policy", RoleName=role_name, PolicyName=REVOKE_POLICY)
        return f"sessions issued before {found} are denied already" if found and found >= cutoff else None

    def put() -> str:
        policy = {"Version": "2012-10-17", "Statement": [{
            "Sid": "IrbotRevokeOlderSessions", "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}}}]}
        call(iam, "put_role_policy", RoleName=role_name, PolicyName=REVOKE_POLICY, PolicyDocument=json.dumps(policy))
        return f"sessions of {role_name} issued before {cutoff} are denied everything (every user of the role is affected)"

    change(steps, f"{name}:{role_name}", f"Revoke older sessions of role {role_name}", dry_run=dry_run,
           plan=f"inline deny-all for tokens issued before {cutoff}", skip=skip, already=already, do=put)
