"""Who is in the approvers' and the responders' Slack user groups, asked of Slack and kept for a minute."""

from __future__ import annotations

import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from core.logs import get_logger

log = get_logger(__name__)


class GroupMembers:
    # A group read lasts ttl_seconds; when Slack can't answer, the last members read stay good this long, then none.
    STALE_SECONDS = 600.0

    def __init__(self, client: WebClient, group: str, ttl_seconds: float = 60.0):
        # Asked before a slash command's ack (the responder check): a short timeout, so the ack stays within 3 s.
        self.client = WebClient(token=client.token, base_url=client.base_url, timeout=2) if isinstance(client, WebClient) else client
        self.group = group
        self.ttl_seconds = ttl_seconds
        self._members: frozenset[str] = frozenset()
        self._read_at = float("-inf")  # the last time Slack answered
        self._asked_at = float("-inf")

    def __call__(self) -> frozenset[str]:
        now = time.monotonic()
        if now - self._read_at > self.ttl_seconds and now - self._asked_at > 5:  # a failed read is asked again in 5 s, not per command
            self._asked_at = now
            try:
                self._members = frozenset(self.client.usergroups_users_list(usergroup=self._group_id())["users"])
                self._read_at = time.monotonic()
            except (SlackApiError, OSError, LookupError) as exc:
                log.error("user group unreadable", group=self.group, error=type(exc).__name__)
        # Fail closed, after a while: nobody approves or responds through a group irbot hasn't read for long.
        return self._members if now - self._read_at <= self.STALE_SECONDS else frozenset()

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


def responder_group(settings, client: WebClient) -> GroupMembers | None:
    """The members of IR_RESPONDER_GROUP, when one is set: read live, so a change needs no restart."""
    return GroupMembers(client, settings.responder_group) if settings.responder_group else None


class People:
    """People's names ("Alice Example"), asked of Slack (users.info, scope users:read) once per person; "" when Slack
    can't say (no scope, an unknown or deleted user, Slack down), so the report shows the ID alone."""

    def __init__(self, client: WebClient):
        self.client = client
        self._names: dict[str, str] = {}

    def __call__(self, user_id: str) -> str:
        if user_id not in self._names:
            self._names[user_id] = self._ask(user_id)
        return self._names[user_id]

    def _ask(self, user_id: str) -> str:
        try:
            user = self.client.users_info(user=user_id)["user"]
        except (SlackApiError, OSError, LookupError, TypeError) as exc:
            log.warning("no name for a user", user=user_id, error=exc.response.get("error", "") if isinstance(exc, SlackApiError) else type(exc).__name__)
            return ""
        profile = user.get("profile") or {}
        name = user.get("real_name") or profile.get("real_name") or profile.get("display_name") or user.get("name") or ""
        return " ".join(str(name).split())[:80]
