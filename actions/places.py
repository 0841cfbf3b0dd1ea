"""Where work that fans out goes: the accounts a request names, the enabled regions of irbot's partition, and a
session in each account. hunt-key and prep look everywhere the same way."""

from __future__ import annotations

import boto3

from actions.accounts import partition
from actions.aws import call, client
from actions.context import RunContext
from actions.errors import ActionError

PERMISSIONS = ("ec2:DescribeRegions",)


def chosen_accounts(context: RunContext, accounts: str | None) -> tuple[str, ...]:
    """``all``: every account irbot may act in; a comma-separated list: those; nothing: the request's own account."""
    if accounts == "all" and context.allowed_accounts:
        return context.allowed_accounts()
    if accounts and accounts != "all":
        return tuple(accounts.split(","))
    return (context.account,)


def enabled_regions(session: boto3.Session, region: str) -> list[str]:
    """Every region the account has enabled, in ``region``'s partition (credentials work in their own partition only)."""
    found = call(client(session, "ec2", region), "describe_regions")["Regions"]
    return sorted(r["RegionName"] for r in found
                  if r.get("OptInStatus", "opt-in-not-required") in ("opt-in-not-required", "opted-in")
                  and partition(r["RegionName"]) == partition(region))


def enter(session: boto3.Session, context: RunContext, account: str) -> tuple[str, boto3.Session | None, ActionError | None]:
    """A session in ``account`` (the request's own session there), or why irbot couldn't get in."""
    try:
        return account, (session if account == context.account or not context.session_in else context.session_in(account)), None
    except ActionError as exc:
        return account, None, exc
