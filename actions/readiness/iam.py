"""IAM: the root user, console users without MFA, old and unused credentials, administrators attached directly."""

from __future__ import annotations

from datetime import datetime

from actions.aws import call, paginate
from actions.errors import ActionError
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.words import count

STALE_DAYS = 90
USERS = ("iam:ListUsers",)
KEYS = ("iam:ListAccessKeys",)
ADMIN_POLICY = "AdministratorAccess"


def users(probe: Probe) -> list[dict]:
    return paginate(probe.client("iam"), "list_users", "Users")


def login_profile(iam, user: str) -> dict | None:
    """The user's console password, None without one."""
    try:
        return call(iam, "get_login_profile", UserName=user)["LoginProfile"]
    except ActionError as exc:
        if exc.code == "NoSuchEntity":
            return None
        raise


def active_keys(iam, user: str) -> list[dict]:
    return [k for k in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=user) if k.get("Status") == "Active"]


def days_since(now: datetime, then: datetime) -> int:
    return (now - then).days


@check("root", "Root user without access keys and with MFA", area="IAM", scope=Scope.ACCOUNT, permissions=("iam:GetAccountSummary",),
       fix="Delete the root user's access keys and give it an MFA device (a hardware key, kept safe); use roles for everything else.")
def root(probe: Probe) -> Verdict:
    summary = call(probe.client("iam"), "get_account_summary")["SummaryMap"]
    wrong = [why for why, bad in (("root has access keys", summary.get("AccountAccessKeysPresent")),
                                  ("root has no MFA", not summary.get("AccountMFAEnabled"))) if bad]
    return failed("; ".join(wrong), wrong) if wrong else passed("no root access keys, MFA on")


@check("console-mfa", "Every console user has MFA", area="IAM", scope=Scope.ACCOUNT,
       permissions=(*USERS, "iam:GetLoginProfile", "iam:ListMFADevices"),
       fix="Give each user listed an MFA device, or remove their console password; enforce it with a policy denying all without MFA.")
def console_mfa(probe: Probe) -> Verdict:
    iam = probe.client("iam")
    console = [u["UserName"] for u in users(probe) if login_profile(iam, u["UserName"])]
    bare = [u for u in console if not paginate(iam, "list_mfa_devices", "MFADevices", UserName=u)]
    if bare:
        return failed(f"{count(len(bare), 'console user')} of {len(console)} without MFA", bare)
    return passed(f"all {count(len(console), 'console user')} have MFA")


@check("key-age", f"No active access key older than {STALE_DAYS} days", area="IAM", scope=Scope.ACCOUNT, permissions=(*USERS, *KEYS),
       fix="Rotate each key listed (make a new one, move to it, deactivate and delete the old), or replace it with a role.")
def key_age(probe: Probe) -> Verdict:
    iam = probe.client("iam")
    old = sorted(((days_since(probe.now, k["CreateDate"]), u["UserName"], k["AccessKeyId"])
                  for u in users(probe) for k in active_keys(iam, u["UserName"])
                  if days_since(probe.now, k["CreateDate"]) > STALE_DAYS), reverse=True)
    if old:
        return failed(f"{count(len(old), 'active key')} older than {STALE_DAYS} days", [f"{key} of {user}: {age} days" for age, user, key in old])
    return passed(f"no active key older than {STALE_DAYS} days")


@check("unused-credentials", f"No credentials unused for {STALE_DAYS} days", area="IAM", scope=Scope.ACCOUNT,
       permissions=(*USERS, *KEYS, "iam:GetLoginProfile", "iam:GetAccessKeyLastUsed"),
       fix="Deactivate the keys and remove the passwords listed: credentials nobody uses are a thief's best kept secret.")
def unused_credentials(probe: Probe) -> Verdict:
    iam = probe.client("iam")
    unused = []
    for user in users(probe):
        name = user["UserName"]
        password = login_profile(iam, name)
        if password:
            # Never used: counted from when it was set.
            idle = days_since(probe.now, user.get("PasswordLastUsed") or password["CreateDate"])
            if idle > STALE_DAYS:
                unused.append((idle, f"{name}'s password: {idle} days"))
        for key in active_keys(iam, name):
            used = call(iam, "get_access_key_last_used", AccessKeyId=key["AccessKeyId"]).get("AccessKeyLastUsed", {}).get("LastUsedDate")
            idle = days_since(probe.now, used or key["CreateDate"])
            if idle > STALE_DAYS:
                unused.append((idle, f"{key['AccessKeyId']} of {name}: {idle} days"))
    if unused:
        return failed(f"{count(len(unused), 'credential')} unused for over {STALE_DAYS} days", [line for _, line in sorted(unused, reverse=True)])
    return passed(f"every password and active key used in the last {STALE_DAYS} days (or newer)")


@check("admin-users", f"No user with {ADMIN_POLICY} attached directly", area="IAM", scope=Scope.ACCOUNT,
       permissions=(*USERS, "iam:ListAttachedUserPolicies"),
       fix=f"Detach {ADMIN_POLICY} from each user listed; give administrators a role they assume, with MFA.")
def admin_users(probe: Probe) -> Verdict:
    iam = probe.client("iam")
    # AWS's own policy (arn:…:iam::aws:policy/AdministratorAccess), not a customer's of the same name.
    admins = [u["UserName"] for u in users(probe)
              if any(p["PolicyArn"].split(":", 5)[4:] == ["aws", f"policy/{ADMIN_POLICY}"]
                     for p in paginate(iam, "list_attached_user_policies", "AttachedPolicies", UserName=u["UserName"]))]
    if admins:
        return failed(f"{count(len(admins), 'user')} with {ADMIN_POLICY} attached directly", admins)
    return passed("none attached directly")
