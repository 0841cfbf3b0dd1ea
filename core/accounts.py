"""The one Accounts of a process, made from its settings (see actions.accounts)."""

from __future__ import annotations

import boto3

from actions.accounts import Accounts, AccountSettings
from core.settings import Settings

_MADE: dict[int, tuple[Settings, Accounts]] = {}


def accounts_for(settings: Settings) -> Accounts:
    """Cached per settings, so irbot's own account and the organization's list are asked once, and member
    credentials are reused across a process's jobs until they near their expiry."""
    made = _MADE.get(id(settings))
    if made is None or made[0] is not settings:
        made = (settings, Accounts(boto3.Session(), AccountSettings(settings.accounts, settings.account_role, settings.role_external_id,
                                                                      settings.default_account), settings.aws_region or "us-east-1"))
        _MADE.clear()
        _MADE[id(settings)] = made
    return made[1]
