"""Who is in the approvers' Slack user group, asked of Slack and kept for a minute."""

from __future__ import annotations

import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from core.logs import get_logger

log = get_logger(__name__)


class GroupMembers:
    def __init__(self, client: WebClient, group: str, ttl_seconds: float = 60.0):
        self.client = client
        self.group = group
        self.ttl_seconds = ttl_seconds
        self._members: frozenset[str] = frozenset()
        self._fetched_at = float("-inf")

    def __call__(self) -> frozenset[str]:
        if time.monotonic() - self._fetched_at > self.ttl_seconds:
            try:
                self._members = frozenset(self.client.usergroups_users_list(usergroup=self._group_id())["users"])
                self._fetched_at = time.monotonic()
            except (SlackApiError, OSError, LookupError) as exc:
                # Fail closed: nobody approves through a group irbot can't read.
                log.error("approver group unreadable", group=self.group, error=type(exc).__name__)
                return frozenset()
        return self._members

    def _group_id(self) -> str:
        if self.group.startswith("S") and self.group.isupper():
            return self.group
        for group in self.client.usergroups_list()["usergroups"]:
            if group.get("handle") == self.group:
                return group["id"]
        raise LookupError(f"no user group with handle {self.group}")


def approver_group(settings, client: WebClient) -> GroupMembers | None:
    """The members of IR_APPROVER_GROUP, when one is set."""
    return GroupMembers(client, settings.approver_group) if settings.approver_group else None
