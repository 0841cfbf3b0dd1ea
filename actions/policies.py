"""Inline deny policies that cut off sessions issued before a moment (aws:TokenIssueTime)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from actions.aws import call
from actions.errors import ActionError


def cutoff_time(iso: str) -> str:
    """An ISO time as IAM's conditions want it: 2026-11-23T14:02:11Z."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_cutoff(iam, operation: str, **params) -> str | None:
    """The TokenIssueTime cutoff of the inline policy ``operation`` (get_role_policy or get_user_policy)
    reads, or None when there is no such policy."""
    try:
        document = call(iam, operation, **params)["PolicyDocument"]
    except ActionError as exc:
        if "NoSuchEntity" in str(exc):
            return None
        raise
    if isinstance(document, str):
        document = json.loads(document)
    return next((s["Condition"]["DateLessThan"]["aws:TokenIssueTime"] for s in document.get("Statement", [])
                 if "aws:TokenIssueTime" in s.get("Condition", {}).get("DateLessThan", {})), "")
