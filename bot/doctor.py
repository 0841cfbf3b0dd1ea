"""irbot doctor: a deployment checked from inside, one line per check, each failure saying what to do.

Run by an operator, with the credentials and environment irbot's processes have. Each check is a
function of the settings (and an AWS session) returning one Result; none raises, so one broken part
never hides the others. A check that can't tell (Redis with CONFIG disabled, IAM's policy simulator
not allowed or not there) says so as a note, which is not a failure.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.parsers import ResponseParserError
from redis.exceptions import RedisError, ResponseError
from slack_sdk.errors import SlackApiError

from actions import registry
from actions.accounts import AccountSettings, Accounts
from actions.aws import Declaration, call, client, paginate
from actions.errors import ActionError
from actions.scopes import SCOPED, SCOPES, example
from chat.slack import slack_client
from core.evidence import EvidenceStore
from core.logs import get_logger
from core.queues import connect
from core.settings import Settings
from findings.consumer import dead_letter_queue, queue_region

# The Slack app's bot scopes, as manifest.yml grants them (the manifest isn't shipped with the package;
# tests/test_doctor.py keeps the two the same).
BOT_SCOPES = ("commands", "chat:write", "chat:write.public", "usergroups:read", "groups:write", "channels:manage",
              "pins:write", "files:write", "users:read")

# What the doctor itself calls. The account checks go through actions.accounts, under its own declarations.
# Not in `irbot iam-policy`: no irbot process calls these. All but iam:SimulatePrincipalPolicy are in irbot's
# policy already (the evidence store, the findings consumer, collect's iam:GetRole), so with irbot's own
# credentials the one check that can't run is the simulation, which then says so as a note.
DOCTOR = Declaration("irbot doctor", frozenset({"s3:GetBucketObjectLockConfiguration", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                                                "iam:GetRole", "iam:SimulatePrincipalPolicy"}))
# An operator waits at a terminal: a dead endpoint should fail in seconds, not after a storm's worth of retries.
QUICK = Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=5, read_timeout=20)

PASS, FAIL, NOTE = "pass", "FAIL", "note"

log = get_logger("irbot.doctor")


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # PASS, FAIL, or NOTE: couldn't tell, said so, not a failure
    text: str

    def line(self) -> str:
        return f"{self.status:<4}  {self.check:<11} {self.text}"


# -- Slack ------------------------------------------------------------------------------------------


def check_slack(settings: Settings) -> Result:
    """The token is valid and carries every scope the manifest asks for: Slack lists a token's scopes in the
    x-oauth-scopes header of every answer, so auth.test alone tells both."""
    if not settings.slack_bot_token:
        return Result("slack", FAIL, "SLACK_BOT_TOKEN is not set: set it to the app's bot token (xoxb-...).")
    try:
        response = slack_client(settings).auth_test()
    except SlackApiError as exc:
        return Result("slack", FAIL, f"Slack refused the token ({exc.response.get('error')}): check SLACK_BOT_TOKEN, and that the app "
                                     f"is still installed to the workspace.")
    except OSError as exc:
        return Result("slack", FAIL, f"cannot reach Slack at {settings.slack_api_url} ({type(exc).__name__}): check the network and SLACK_API_URL.")
    who = f"{response.get('user')} in {response.get('team')}"
    header = next((value for name, value in (response.headers or {}).items() if name.lower() == "x-oauth-scopes"), None)
    if header is None:
        return Result("slack", FAIL, f"token valid ({who}), but Slack did not say which scopes it has (no x-oauth-scopes header): "
                                     f"check SLACK_API_URL points at Slack's Web API.")
    granted = {scope.strip() for scope in header.split(",")}
    missing = [scope for scope in BOT_SCOPES if scope not in granted]
    if missing:
        return Result("slack", FAIL, f"token valid ({who}), but it lacks the scopes {', '.join(missing)}: add them to the app's bot scopes "
                                     f"(as manifest.yml has them) and reinstall the app to the workspace.")
    return Result("slack", PASS, f"token valid ({who}), with all {len(BOT_SCOPES)} bot scopes of manifest.yml.")


# -- Redis ------------------------------------------------------------------------------------------


def check_redis(settings: Settings) -> Result:
    """Reachable, and durable: the audit records not yet sealed and every waiting request live only in Redis."""
    if not settings.redis_url:
        return Result("redis", FAIL, "REDIS_URL is not set: set it to irbot's Redis, e.g. redis://localhost:6379/0.")
    where = _where(settings.redis_url)  # never the URL itself: it may carry a password
    connection = connect(settings.redis_url)
    try:
        connection.ping()
    except RedisError as exc:
        return Result("redis", FAIL, f"cannot reach Redis at {where} ({type(exc).__name__}): start Redis or fix REDIS_URL.")
    try:
        config = connection.config_get("append*")
    except ResponseError:
        # Managed Redis services and hardened configs (rename-command CONFIG "") refuse CONFIG: can't tell, not broken.
        return Result("redis", NOTE, f"reachable at {where}; CONFIG is disabled there, so irbot can't see whether the append-only "
                                     f"file is on: make sure Redis runs with appendonly yes and appendfsync everysec or always.")
    except RedisError as exc:
        return Result("redis", FAIL, f"reachable at {where}, but CONFIG GET failed ({type(exc).__name__}): check Redis.")
    appendonly, fsync = _text(config.get("appendonly")), _text(config.get("appendfsync"))
    if appendonly != "yes":
        return Result("redis", FAIL, f"reachable at {where}, but not durable (appendonly {appendonly or 'unknown'}): a restart loses the audit "
                                     f"records not yet sealed and every waiting request; run Redis with appendonly yes (redis.conf, "
                                     f"or CONFIG SET appendonly yes then CONFIG REWRITE).")
    if fsync not in ("everysec", "always"):
        return Result("redis", FAIL, f"reachable at {where}, append-only file on, but appendfsync {fsync or 'unknown'} leaves writes to the "
                                     f"OS for up to 30 s: set appendfsync everysec or always.")
    return Result("redis", PASS, f"reachable at {where}, durable (appendonly yes, appendfsync {fsync}).")


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


# -- AWS: the evidence bucket, the findings queue, irbot's permissions, the accounts ----------------


def check_evidence(settings: Settings, session: boto3.Session) -> Result:
    """The bucket exists and has Object Lock; a default retention in another mode than irbot's would mean the
    bucket's owner and irbot disagree on how strongly evidence is kept."""
    if not settings.evidence_bucket:
        return Result("evidence", FAIL, "IR_EVIDENCE_BUCKET is not set: set it to the evidence bucket (with Object Lock).")
    bucket, mode = settings.evidence_bucket, settings.evidence_lock_mode
    store = EvidenceStore(client(session, "s3", settings.aws_region, declared=DOCTOR, config=QUICK), bucket, lock_mode=mode)
    try:
        lock = store.lock_configuration()  # the evidence store's own reading, so the doctor sees what a worker sees
    except ActionError as exc:
        return Result("evidence", FAIL, str(exc))
    if lock.get("ObjectLockEnabled") != "Enabled":
        return Result("evidence", FAIL, f"bucket {bucket} has no Object Lock, so its evidence can be changed or deleted: turn it on "
                                        f"(versioning on, then aws s3api put-object-lock-configuration --bucket {bucket} "
                                        f"--object-lock-configuration ObjectLockEnabled=Enabled).")
    default = lock.get("Rule", {}).get("DefaultRetention", {}).get("Mode")
    if default and default != mode:
        return Result("evidence", FAIL, f"bucket {bucket} has Object Lock with default retention {default}, but IR_EVIDENCE_LOCK_MODE is "
                                        f"{mode}: make them the same.")
    return Result("evidence", PASS, f"bucket {bucket} has Object Lock; irbot writes evidence in {mode} mode for "
                                    f"{settings.evidence_retention_days} days.")


def check_findings_queue(settings: Settings, session: boto3.Session) -> Result:
    """The queue exists and has a dead-letter queue: the consumer sends there what it can't read, instead of losing it."""
    url = settings.findings_queue_url
    if not url:
        return Result("findings", NOTE, "IR_FINDINGS_QUEUE_URL is not set: irbot findings is not in use, nothing to check.")
    sqs = client(session, "sqs", queue_region(url, settings.aws_region), declared=DOCTOR, config=QUICK)
    try:
        dead_letters = dead_letter_queue(sqs, url)
    except ActionError as exc:
        return Result("findings", FAIL, f"queue {url}: {exc}")
    if dead_letters is None:
        return Result("findings", FAIL, f"queue {url} has no dead-letter queue, so a message irbot can't read would be lost: give it a "
                                        f"RedrivePolicy with a deadLetterTargetArn.")
    return Result("findings", PASS, f"queue {url} present, dead-letter queue {dead_letters}.")


class PolicySimulator:
    """IAM's policy simulator (iam:SimulatePrincipalPolicy), behind the one method the doctor needs, so a test can
    stand in for it: moto doesn't simulate (its server answers HTTP 500)."""

    def __init__(self, iam):
        self.iam = iam

    def denied(self, principal: str, names: list[str], resources: list[str] | None = None, context: list[dict] | None = None) -> list[str]:
        """The IAM actions of ``names`` that ``principal``'s policies don't allow (on ``resources``, with ``context``);
        an ActionError when IAM can't say."""
        scoped = {**({"ResourceArns": resources} if resources else {}), **({"ContextEntries": context} if context else {})}
        try:
            results = paginate(self.iam, "simulate_principal_policy", "EvaluationResults", PolicySourceArn=principal, ActionNames=names,
                               **scoped)
        except ResponseParserError:
            # What a stand-in without the simulator answers (moto: an HTML error page); not an AWS refusal.
            raise ActionError("IAM's policy simulator is not available at this endpoint") from None
        return sorted(r["EvalActionName"] for r in results if r.get("EvalDecision") != "allowed")


def check_permissions(settings: Settings, session: boto3.Session, simulator: PolicySimulator | None = None) -> Result:
    """irbot's principal is allowed every IAM action the registry's actions call (their own account's part)."""
    iam = client(session, "iam", settings.aws_region, declared=DOCTOR, config=QUICK)
    simulator = simulator or PolicySimulator(iam)
    try:
        arn = call(client(session, "sts", settings.aws_region, declared=DOCTOR, config=QUICK), "get_caller_identity")["Arn"]
    except ActionError as exc:
        return Result("permissions", FAIL, f"irbot's AWS identity could not be read: {exc}")
    wanted = registry.permissions()
    try:
        principal = _principal(iam, arn)
        if principal is None:
            return Result("permissions", NOTE, f"{arn} is not a role or a user, so IAM can't simulate its policy: compare its "
                                               f"policy with `irbot iam-policy` by hand.")
        # A call allowed only on irbot's own resources (actions.scopes) is asked about such a resource, with its tags.
        partition, account = principal.split(":")[1], principal.split(":")[4]
        denied = simulator.denied(principal, [w for w in wanted if w not in SCOPED])
        for scope in SCOPES:
            names = [a for a in scope.actions if a in wanted]
            if names:
                denied += simulator.denied(principal, names, *example(scope, partition, account, settings.aws_region))
        denied = sorted(set(denied))
    except ActionError as exc:
        # Also when the identity may not simulate: irbot's own policy leaves iam:SimulatePrincipalPolicy out on purpose.
        return Result("permissions", NOTE, f"could not simulate the policy of {arn} ({exc}); to check it, run irbot doctor with "
                                           f"credentials allowed iam:SimulatePrincipalPolicy, or compare with `irbot iam-policy`.")
    if denied:
        return Result("permissions", FAIL, f"{principal} is not allowed {', '.join(denied)}: give it the policy `irbot iam-policy` prints.")
    return Result("permissions", PASS, f"{principal} is allowed all {len(wanted)} IAM actions of irbot's actions.")


def _principal(iam, arn: str) -> str | None:
    """The IAM ARN the simulator takes for the caller: the role itself for an assumed-role session (its path only
    IAM knows, hence iam:GetRole), the user as is; None for the root user or a federated user."""
    fields = arn.split(":", 5)
    resource = fields[5] if len(fields) == 6 else ""
    if resource.startswith("assumed-role/"):
        return call(iam, "get_role", RoleName=resource.split("/")[1])["Role"]["Arn"]
    if resource.startswith("user/"):
        return f"arn:{fields[1]}:iam::{fields[4]}:{resource}"
    return None


def check_accounts(settings: Settings, session: boto3.Session) -> Result:
    """Every account of IR_ACCOUNTS can be got into, the way the worker does it (actions.accounts): a role that is
    missing or doesn't trust irbot would otherwise show only at the first incident there."""
    accounts = Accounts(session, AccountSettings(settings.accounts, settings.account_role, settings.role_external_id,
                                                 settings.default_account), settings.aws_region)
    try:
        own = accounts.own
        others = sorted(accounts.allowed() - {own})
    except ActionError as exc:
        return Result("accounts", FAIL, str(exc))
    listed = f"org lists {', '.join(others) or 'no other account'}; " if settings.accounts == "org" else ""
    if not others:
        return Result("accounts", PASS, f"{listed}irbot acts in its own account {own} only (IR_ACCOUNTS names no other).")

    def assume(account: str) -> str | None:
        try:
            # The worker's own call, SourceIdentity included, so the trust policy's sts:SetSourceIdentity is checked too.
            accounts.session(account, request_id="doctor", person="irbot-doctor")
            return None
        except ActionError as exc:
            return f"{account} ({exc.code or 'error'})"

    with ThreadPoolExecutor(max_workers=min(8, len(others))) as pool:
        failed = [f for f in pool.map(assume, others) if f]
    role = settings.account_role
    if failed:
        return Result("accounts", FAIL, f"{listed}could not assume {role} in {', '.join(failed)}: deploy it there with "
                                        f"`irbot iam-policy --member --hub-role <irbot's role ARN>`.")
    return Result("accounts", PASS, f"{listed}assumed {role} in {', '.join(others)}.")


# -- all of them --------------------------------------------------------------------------------------


def run(settings: Settings, *, session: boto3.Session | None = None, simulator: PolicySimulator | None = None) -> list[Result]:
    session = session or boto3.Session()
    checks: list[tuple[str, Callable[[], Result]]] = [("slack", lambda: check_slack(settings)), ("redis", lambda: check_redis(settings))]
    aws_checks = [("evidence", lambda: check_evidence(settings, session)),
                  ("findings", lambda: check_findings_queue(settings, session)),
                  ("permissions", lambda: check_permissions(settings, session, simulator)),
                  ("accounts", lambda: check_accounts(settings, session))]
    results = [_guarded(name, check) for name, check in checks]
    if not settings.aws_region:
        return results + [Result(name, FAIL, "AWS_REGION is not set: set it to irbot's region (the evidence bucket's).")
                          for name, _ in aws_checks]
    return results + [_guarded(name, check) for name, check in aws_checks]


def _guarded(name: str, check: Callable[[], Result]) -> Result:
    """A check that breaks in a way it didn't foresee is one failed line, not a traceback hiding the other checks."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - the trace goes to stderr through the redacting log, the line names the type only
        log.exception("doctor check failed", check=name)
        return Result(name, FAIL, f"the check itself failed ({type(exc).__name__}; the trace is on stderr): please report it.")
