"""The AWS accounts irbot acts in, and how it gets into each: its own credentials at home, an assumed
role (IR_ACCOUNT_ROLE) in every member account of the organization.

Each assumed-role session is named after the request and carries the Slack user who asked as its
SourceIdentity, so the member account's CloudTrail ties every change to a person and a request.
Credentials are cached per (account, request, person) and renewed by botocore before they expire.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import RefreshableCredentials

from actions.aws import Declaration, call, client
from actions.errors import ActionError, explain

ACCOUNT_ID = re.compile(r"\d{12}")
DEFAULT_ROLE = "irbot-responder"
ORG_CACHE_SECONDS = 300
SESSION_SECONDS = 3600
MAX_CACHED_SESSIONS = 512
# AssumeRole's own rules for the session name and the source identity.
SESSION_WORD = re.compile(r"[^\w+=,.@-]")

# What finding accounts calls (the bot and the worker), and what switching into a member account calls (the worker).
ACCOUNT_LOOKUP = Declaration("the account lookup", frozenset({"sts:GetCallerIdentity", "sts:GetAccessKeyInfo", "organizations:ListAccounts"}))
ROLE_SWITCH = Declaration("the account switch", frozenset({"sts:AssumeRole", "sts:SetSourceIdentity"}))
# Quick answers for the bot, which must reply within Slack's 3 s.
QUICK = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=2)


def account_id(word) -> str | None:
    return word if isinstance(word, str) and ACCOUNT_ID.fullmatch(word) else None


@dataclass(frozen=True)
class AccountSettings:
    accounts: tuple[str, ...] | str = ()  # 12-digit IDs, or "org" for every ACTIVE account of the organization
    role: str = DEFAULT_ROLE
    external_id: str | None = None
    default: str | None = None  # the account a command without --account acts in (else irbot's own)


class Accounts:
    """irbot's own account, the accounts it may act in, and a session in each."""

    def __init__(self, base: boto3.Session, settings: AccountSettings, region: str):
        self.base, self.settings, self.region = base, settings, region
        self._own: str | None = None
        self._org: tuple[float, frozenset[str]] | None = None
        self._credentials: dict[tuple[str, str, str], RefreshableCredentials] = {}
        self._lock = threading.Lock()  # guards the dicts; each key's own lock guards its AssumeRole
        self._key_locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._clients: dict[str, object] = {}
        self._loader = botocore.session.Session().get_component("data_loader")

    def _sts(self, config: Config | None = None):
        """Made once: a first client costs a second of CPU, which a bot answering within 3 s can't pay per command."""
        kind = "quick" if config is QUICK else "switch"
        with self._lock:
            if kind not in self._clients:
                declared = ACCOUNT_LOOKUP if config is QUICK else ROLE_SWITCH
                self._clients[kind] = client(self.base, "sts", self.region, declared=declared, config=config)
            return self._clients[kind]

    @property
    def own(self) -> str:
        if self._own is None:
            self._own = call(self._sts(QUICK), "get_caller_identity")["Account"]
        return self._own

    def default(self) -> str:
        return self.settings.default or self.own

    def allowed(self) -> frozenset[str]:
        """Every account irbot may act in; its own always."""
        listed = self.settings.accounts
        if listed == "org":
            now = time.monotonic()
            if self._org is None or now - self._org[0] > ORG_CACHE_SECONDS:
                org = client(self.base, "organizations", self.region, declared=ACCOUNT_LOOKUP, config=QUICK)
                pages = org.get_paginator("list_accounts").paginate()
                try:
                    active = frozenset(a["Id"] for page in pages for a in page["Accounts"] if a.get("Status") == "ACTIVE")
                except Exception as exc:  # noqa: BLE001 - becomes the one sentence below
                    raise ActionError(f"irbot could not list the organization's accounts (IR_ACCOUNTS=org): {explain(exc, service='organizations')}") from None
                self._org = (now, active)
            return self._org[1] | {self.own}
        return frozenset(listed) | {self.own}

    def refusal(self, account: str) -> str | None:
        """The sentence refusing ``account``, or None when irbot may act there."""
        if self.settings.accounts != "org" and account in self.settings.accounts or account in self.allowed():
            return None
        return (f"Account {account} is not one irbot may act in: add it to IR_ACCOUNTS "
                f"(now {self._described()}), or use `--account` with one that is.")

    def _described(self) -> str:
        return "org: the organization's active accounts" if self.settings.accounts == "org" else (
            ", ".join(self.settings.accounts) or f"only irbot's own, {self.own}")

    def owner_of_key(self, key_id: str) -> str:
        """The account an access key belongs to (AKIA… only: a session key, ASIA…, needs --account)."""
        return call(self._sts(QUICK), "get_access_key_info", AccessKeyId=key_id)["Account"]

    def role_arn(self, account: str) -> str:
        return f"arn:{partition(self.region)}:iam::{account}:role/{self.settings.role}"

    def session(self, account: str, *, request_id: str, person: str) -> boto3.Session:
        """A new session in ``account``: irbot's own credentials at home, else the member role assumed for this
        request and person (its credentials cached, so a hunt assumes each role once, and renewed before expiry)."""
        if account == self.own:
            session = boto3.Session(botocore_session=self._core(), region_name=self.region)
            session.irbot_account = account  # type: ignore[attr-defined]  # CloudTrail pacing is per account
            return session
        key = (account, request_id, person)
        with self._lock:
            self._forget_old_requests()
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one AssumeRole per key, while other accounts assume theirs in parallel
            credentials = self._credentials.get(key)
            if credentials is None:
                credentials = self._assume(account, request_id, person)
                with self._lock:  # with the eviction's lock, so an entry is never kept past its key's
                    if key in self._key_locks:
                        self._credentials[key] = credentials
        core = self._core()
        core._credentials = credentials  # botocore renews refreshable credentials before they expire
        session = boto3.Session(botocore_session=core, region_name=self.region)
        session.irbot_account = account  # type: ignore[attr-defined]
        return session

    def _core(self) -> botocore.session.Session:
        """A botocore session sharing one loader: each new session would otherwise parse the service
        models again (0.2 s for EC2's), once per account of a hunt and once per request."""
        core = botocore.session.Session()
        core.register_component("data_loader", self._loader)
        return core

    def _forget_old_requests(self) -> None:
        """A worker lives for weeks and every request gets its own session name: keep the newest keys only."""
        while len(self._key_locks) > MAX_CACHED_SESSIONS:
            oldest = next(iter(self._key_locks))
            self._key_locks.pop(oldest)
            self._credentials.pop(oldest, None)

    def _assume(self, account: str, request_id: str, person: str) -> RefreshableCredentials:
        arn = self.role_arn(account)
        params = {"RoleArn": arn, "RoleSessionName": SESSION_WORD.sub("-", f"irbot-{request_id}")[:64],
                  "DurationSeconds": SESSION_SECONDS}
        if person:
            params["SourceIdentity"] = SESSION_WORD.sub("-", person)[:64]
        if self.settings.external_id:
            params["ExternalId"] = self.settings.external_id

        def fetch() -> dict:
            try:
                found = call(self._sts(), "assume_role", **params)["Credentials"]
            except ActionError as exc:
                raise ActionError(f"irbot could not get into account {account} as {arn} ({exc.code or 'error'}): deploy that role there "
                                  f"with `irbot iam-policy --member --hub-role <irbot's role ARN>`, then run the command again.",
                                  code=exc.code) from None
            expiry = found["Expiration"]
            return {"access_key": found["AccessKeyId"], "secret_key": found["SecretAccessKey"], "token": found["SessionToken"],
                    "expiry_time": expiry.isoformat() if hasattr(expiry, "isoformat") else str(expiry)}

        # Fetched now, so a missing role fails here with its sentence rather than at the action's first call.
        return RefreshableCredentials.create_from_metadata(fetch(), refresh_using=fetch, method="irbot-assume-role")


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"

