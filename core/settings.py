"""irbot's configuration, read from the environment and checked before anything starts."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit


class ConfigError(Exception):
    """What keeps irbot from starting: one line per problem, each naming the variable, what is wrong
    with it and what it should hold, so one run shows everything to fix."""

    def __init__(self, *problems: str):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    needed_by: tuple[str, ...]  # the commands that refuse to start without it
    default: str | None = None


# AVML writes a LiME-format image to a path; /dev/stdout streams it over SSH without touching the disk.
DEFAULT_MEMORY_COMMAND = "sudo avml /dev/stdout"
# LiME format: each "System RAM" range of /proc/iomem, preceded by a 32-byte header.
DEFAULT_SIZE_COMMAND = (
    "sudo grep ': System RAM' /proc/iomem | { t=0; while IFS='-: ' read -r s e _; do t=$((t + 0x$e - 0x$s + 1 + 32)); done; echo $t; }"
)


# One hour: links reach everyone in the channel, guests and later members included, and what they
# open (console output, user data) often holds secrets; a responder opens them within minutes,
# and later readers use the bucket with their own AWS access, which is logged.
LINK_EXPIRY_SECONDS = 3600

VARIABLES = (
    Variable("SLACK_BOT_TOKEN", "the bot token of irbot's Slack app (xoxb-...)", ("serve", "worker", "findings")),
    Variable("SLACK_SIGNING_SECRET", "the signing secret of irbot's Slack app (HTTP mode)", ("serve",)),
    Variable("SLACK_APP_TOKEN", "an app-level token (xapp-...) with connections:write: serve uses Socket Mode when set", ()),
    Variable("SLACK_API_URL", "base URL of the Slack Web API, ending in /api/", (), "https://slack.com/api/"),
    Variable("REDIS_URL", "where the queues live, e.g. redis://localhost:6379/0", ("serve", "worker", "findings")),
    # serve and break glass append audit records too, and need the bucket's sealed head to continue
    # the chain if Redis ever loses it: without it they would start a second chain at record 1.
    Variable("IR_EVIDENCE_BUCKET", "the S3 bucket evidence is written to (Object Lock recommended)", ("serve", "worker", "break-glass")),
    Variable("IR_EVIDENCE_RETENTION_DAYS", "days each evidence object is locked for", (), "90"),
    Variable("IR_EVIDENCE_LOCK_MODE", "COMPLIANCE, or GOVERNANCE for test accounts", (), "COMPLIANCE"),
    Variable("IR_LINK_EXPIRY_SECONDS", "how long the evidence links posted in the channel work (max 604800)", (), "3600"),
    Variable("IR_RESPONDERS", "comma-separated Slack user IDs allowed to run /ir (or set IR_RESPONDER_GROUP)", ("serve",)),
    Variable("IR_RESPONDER_GROUP", "a Slack user group (ID S... or handle) whose members may run /ir", ()),
    Variable("IR_APPROVERS", "comma-separated Slack user IDs allowed to approve (or set IR_APPROVER_GROUP)", ("serve", "worker")),
    Variable("IR_APPROVER_GROUP", "a Slack user group (ID S... or handle) whose members may approve", ()),
    Variable("IR_APPROVAL_QUORUM", "how many approvers, besides the requester, a gated request needs", (), "1"),
    Variable("IR_APPROVAL_EXPIRY_SECONDS", "how long a gated request waits for approval", (), "1800"),
    Variable("IR_ANALYST_CIDR", "the one address range isolation still lets SSH in from, e.g. 203.0.113.7/32", ()),
    Variable("IR_ACCOUNTS", "the AWS accounts irbot may act in besides its own: 12-digit IDs, comma-separated, or org for every active account of the organization", ()),
    Variable("IR_ACCOUNT_ROLE", "the role irbot assumes in every other account", (), "irbot-responder"),
    Variable("IR_ROLE_EXTERNAL_ID", "the external ID the member roles require, if they do", ()),
    Variable("IR_DEFAULT_ACCOUNT", "the account a command without --account acts in (default: irbot's own)", ()),
    Variable("IR_BREAK_GLASS_PRINCIPALS", "role or user ARNs, comma-separated, whose permissions irbot's generated policy denies it to change (irbot iam-policy)", ()),
    Variable("IR_HUNT_CONCURRENCY", "how many AWS calls a hunt across accounts makes at once", (), "32"),
    Variable("IR_IMAGE_CONCURRENCY", "how many snapshot blocks /ir image fetches at once per snapshot (EBS allows 1,000 GetSnapshotBlock calls a second per snapshot)", (), "48"),
    Variable("IR_WORKSTATION_INSTANCE", "the forensic workstation /ir workstation attaches volumes to, tagged irbot:role=workstation: an instance ID (in the account and region each request acts in), or arn:aws:ec2:REGION:ACCOUNT:instance/i-...", ()),
    Variable("IR_CAPTURE_SOURCE_SG", "security groups (sg-..., comma-separated) of the workers or the bastion: isolation still lets SSH in from them, so memory can be captured after the cut", ()),
    Variable("IR_UNTRACK_PAUSE_SECONDS", "seconds an isolated interface spends in the allow-all group, so open flows turn untracked", (), "2"),
    Variable("IR_SSH_KEY", "path of the private key (ed25519, ECDSA or RSA) irbot uses for memory capture", ()),
    Variable("IR_SSH_USER", "the SSH user for memory targets given without one (default ec2-user for instances)", ()),
    Variable("IR_SSH_KNOWN_HOSTS", "known_hosts file of the hosts irbot may capture from (instances: else their console's host keys)", ()),
    Variable("IR_SSH_BASTION", "user@host[:port] of a bastion to reach instances through", ()),
    Variable("IR_MEMORY_COMMAND", "remote command whose standard output is the memory image", (), DEFAULT_MEMORY_COMMAND),
    Variable("IR_MEMORY_SIZE_COMMAND", "remote command printing the image's size in bytes, to check completeness", (), "LiME-format size from /proc/iomem"),
    Variable("IR_MEMORY_STALL_SECONDS", "a capture with no data for this long fails", (), "60"),
    Variable("IR_MEMORY_PART_MIB", "S3 multipart part size for memory images, in MiB (5 to 512)", (), "64"),
    Variable("IR_FINDINGS_QUEUE_URL", "the SQS queue EventBridge delivers GuardDuty and Security Hub findings to", ("findings",)),
    Variable("IR_FINDINGS_MIN_SEVERITY", "post findings at or above this: low, medium, high or critical", (), "medium"),
    Variable("IR_ALERTS_CHANNEL", "the Slack channel ID finding cards are posted in", ("findings",)),
    Variable("IR_UPDATES_CHANNEL", "a Slack channel ID where /ir update posts stakeholder updates too", ()),
    Variable("IR_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR", (), "INFO"),
    Variable("PORT", "the HTTP port of irbot serve", (), "3000"),
    Variable("AWS_REGION", "the default AWS region (or AWS_DEFAULT_REGION); --region overrides it", ("worker",)),
)

USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z]{2,5}(-[a-z]+)+-\d+$")


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str | None
    slack_signing_secret: str | None
    slack_app_token: str | None
    slack_api_url: str
    redis_url: str | None
    evidence_bucket: str | None
    evidence_retention_days: int
    evidence_lock_mode: str
    link_expiry_seconds: int
    responders: frozenset[str]
    approvers: frozenset[str]
    approver_group: str | None
    approval_quorum: int
    approval_expiry_seconds: int
    port: int
    aws_region: str | None
    log_level: str = "INFO"
    analyst_cidr: str | None = None
    capture_source_groups: tuple[str, ...] = ()
    accounts: tuple[str, ...] | str = ()  # 12-digit IDs, or "org"
    account_role: str = "irbot-responder"
    role_external_id: str | None = None
    default_account: str | None = None
    hunt_concurrency: int = 32
    image_concurrency: int = 48
    workstation: str | None = None  # an instance ID or an instance ARN
    untrack_pause_seconds: int = 2
    ssh_key: str | None = None
    ssh_user: str | None = None
    ssh_known_hosts: str | None = None
    ssh_bastion: str | None = None
    memory_command: str = DEFAULT_MEMORY_COMMAND
    memory_size_command: str | None = DEFAULT_SIZE_COMMAND
    memory_stall_seconds: int = 60
    memory_part_mib: int = 64
    findings_queue_url: str | None = None
    findings_min_severity: str = "medium"
    alerts_channel: str | None = None
    responder_group: str | None = None
    updates_channel: str | None = None

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token)

    def secrets(self) -> list[str]:
        """Values that must never reach a log line or a message."""
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token]
        password = urlsplit(self.redis_url or "").password
        return [v for v in values + [password] if v]


_LOADED: dict[tuple, Settings] = {}


def current(command: str = "") -> Settings:
    """The settings of this process's environment, read once (not again for every job)."""
    key = (command, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(("IR_", "SLACK_", "REDIS_", "AWS_", "PORT")))))
    if key not in _LOADED:
        _LOADED.clear()  # one environment at a time: a test that changes it gets settings read anew
        _LOADED[key] = load(os.environ, command)
    return _LOADED[key]


# What the example env file (deploy/irbot.env.example) and the docs write where a secret goes: a value
# holding it was copied, not filled in, and using it would fail later with a library's traceback.
PLACEHOLDER_HINTS = {
    "SLACK_BOT_TOKEN": "put in the Bot User OAuth Token (OAuth & Permissions page of irbot's Slack app)",
    "SLACK_SIGNING_SECRET": "put in the Signing Secret (Basic Information page of irbot's Slack app)",
    "SLACK_APP_TOKEN": "put in an app-level token (Basic Information page, App-Level Tokens), or remove the line to serve over HTTP",
}


def _placeholder(name: str, value: str) -> bool:
    return value == "..." or (name in PLACEHOLDER_HINTS and "..." in value)


def load(env: Mapping[str, str], command: str = "") -> Settings:
    """Settings from ``env``; raises one ConfigError listing every variable ``command`` needs and lacks,
    and every malformed one, so a single run shows all there is to fix."""
    problems: list[str] = []
    placeholders = set()
    for variable in VARIABLES:
        value = (env.get(variable.name) or "").strip()
        if value and _placeholder(variable.name, value):
            placeholders.add(variable.name)
            hint = PLACEHOLDER_HINTS.get(variable.name, f"put in {variable.meaning}")
            shown = f" {value!r}" if len(value) <= 12 else ""  # the example's placeholder, never a secret pasted around one
            problems.append(f"{variable.name} still holds the placeholder{shown} from the example configuration: {hint}.")

    def get(name: str) -> str | None:
        value = (env.get(name) or "").strip()
        return value if value and name not in placeholders else None

    def checked(parse, *args, fallback=None):
        try:
            return parse(*args)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return fallback

    for variable in VARIABLES:
        if command in variable.needed_by and not get(variable.name) and variable.name not in placeholders:
            if variable.name == "AWS_REGION" and get("AWS_DEFAULT_REGION"):
                continue
            if variable.name == "IR_APPROVERS" and get("IR_APPROVER_GROUP"):
                continue
            if variable.name == "IR_RESPONDERS" and get("IR_RESPONDER_GROUP"):
                continue
            if variable.name == "SLACK_SIGNING_SECRET" and env.get("SLACK_APP_TOKEN", "").strip():
                continue  # Socket Mode has no signed HTTP requests
            problems.append(f"{variable.name} is not set: it should hold {variable.meaning}.")

    bot_token = get("SLACK_BOT_TOKEN")
    if bot_token and not bot_token.startswith("xoxb-"):
        problems.append("SLACK_BOT_TOKEN is malformed: it should hold a bot token starting with xoxb-.")
    app_token = get("SLACK_APP_TOKEN")
    if app_token and not app_token.startswith("xapp-"):
        problems.append("SLACK_APP_TOKEN is malformed: it should hold an app-level token starting with xapp-.")

    api_url = get("SLACK_API_URL") or "https://slack.com/api/"
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not api_url.endswith("/api/"):
        problems.append("SLACK_API_URL is malformed: it should hold an http(s) URL ending in /api/, e.g. https://slack.com/api/.")

    redis_url = get("REDIS_URL")
    if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        problems.append("REDIS_URL is malformed: it should hold a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0.")

    bucket = get("IR_EVIDENCE_BUCKET")
    if bucket and not BUCKET.match(bucket):
        problems.append("IR_EVIDENCE_BUCKET is malformed: it should hold an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens).")

    lock_mode = (get("IR_EVIDENCE_LOCK_MODE") or "COMPLIANCE").upper()
    if lock_mode not in ("COMPLIANCE", "GOVERNANCE"):
        problems.append("IR_EVIDENCE_LOCK_MODE is malformed: it should hold COMPLIANCE or GOVERNANCE.")

    log_level = (get("IR_LOG_LEVEL") or "INFO").upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("IR_LOG_LEVEL is malformed: it should hold DEBUG, INFO, WARNING or ERROR.")

    region = get("AWS_REGION") or get("AWS_DEFAULT_REGION")
    if region and not REGION.match(region):
        problems.append("AWS_REGION is malformed: it should hold a region name such as us-east-1.")

    values = dict(
        slack_bot_token=bot_token,
        slack_signing_secret=get("SLACK_SIGNING_SECRET"),
        slack_app_token=app_token,
        slack_api_url=api_url,
        redis_url=redis_url,
        evidence_bucket=bucket,
        evidence_retention_days=checked(_integer, get, "IR_EVIDENCE_RETENTION_DAYS", 90, 1, 36500, "a number of days from 1 to 36500"),
        evidence_lock_mode=lock_mode,
        link_expiry_seconds=checked(_integer, get, "IR_LINK_EXPIRY_SECONDS", LINK_EXPIRY_SECONDS, 60, 604800, "a number of seconds from 60 to 604800 (7 days)"),
        responders=checked(_user_ids, get, "IR_RESPONDERS"),
        approvers=checked(_user_ids, get, "IR_APPROVERS"),
        approver_group=checked(_group, get, "IR_APPROVER_GROUP", "ir-approvers"),
        approval_quorum=checked(_integer, get, "IR_APPROVAL_QUORUM", 1, 1, 10, "a number of approvers from 1 to 10"),
        approval_expiry_seconds=checked(_integer, get, "IR_APPROVAL_EXPIRY_SECONDS", 1800, 1, 7 * 24 * 3600, "a number of seconds from 1 to 604800"),
        port=checked(_integer, get, "PORT", 3000, 1, 65535, "a TCP port number from 1 to 65535"),
        aws_region=region,
        log_level=log_level,
        analyst_cidr=checked(_analyst_cidr, get),
        capture_source_groups=checked(_security_groups, get, "IR_CAPTURE_SOURCE_SG"),
        accounts=checked(_accounts, get),
        account_role=checked(_role_name, get),
        role_external_id=checked(_external_id, get),
        default_account=checked(_account, get, "IR_DEFAULT_ACCOUNT"),
        hunt_concurrency=checked(_integer, get, "IR_HUNT_CONCURRENCY", 32, 1, 256, "a number from 1 to 256"),
        image_concurrency=checked(_integer, get, "IR_IMAGE_CONCURRENCY", 48, 1, 256, "a number from 1 to 256"),
        workstation=checked(_workstation, get),
        untrack_pause_seconds=checked(_integer, get, "IR_UNTRACK_PAUSE_SECONDS", 2, 0, 60, "a number of seconds from 0 to 60"),
        ssh_key=checked(_readable_file, get, "IR_SSH_KEY", "the path of a private key file"),
        ssh_user=get("IR_SSH_USER"),
        ssh_known_hosts=checked(_readable_file, get, "IR_SSH_KNOWN_HOSTS", "the path of a known_hosts file"),
        ssh_bastion=get("IR_SSH_BASTION"),
        memory_command=get("IR_MEMORY_COMMAND") or DEFAULT_MEMORY_COMMAND,
        memory_size_command=None if (get("IR_MEMORY_SIZE_COMMAND") or "").lower() == "none" else (get("IR_MEMORY_SIZE_COMMAND") or DEFAULT_SIZE_COMMAND),
        memory_stall_seconds=checked(_integer, get, "IR_MEMORY_STALL_SECONDS", 60, 1, 3600, "a number of seconds from 1 to 3600"),
        memory_part_mib=checked(_integer, get, "IR_MEMORY_PART_MIB", 64, 5, 512, "a number of MiB from 5 to 512"),
        findings_queue_url=get("IR_FINDINGS_QUEUE_URL"),
        findings_min_severity=checked(_choice, get, "IR_FINDINGS_MIN_SEVERITY", ("low", "medium", "high", "critical"), "medium"),
        alerts_channel=get("IR_ALERTS_CHANNEL"),
        responder_group=checked(_group, get, "IR_RESPONDER_GROUP", "ir-responders"),
        updates_channel=checked(_channel, get, "IR_UPDATES_CHANNEL"),
    )
    if problems:
        raise ConfigError(*problems)
    return Settings(**values)


def _integer(get, name: str, default: int, low: int, high: int, what: str) -> int:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} is malformed: it should hold {what}.")
    return value


def _choice(get, name: str, choices: tuple[str, ...], default: str) -> str:
    value = (get(name) or default).lower()
    if value not in choices:
        raise ConfigError(f"{name} is malformed: it should hold one of {', '.join(choices)}.")
    return value


def _readable_file(get, name: str, what: str) -> str | None:
    import os

    path = get(name)
    if path is not None and not os.access(path, os.R_OK):
        raise ConfigError(f"{name} is malformed: it should hold {what} irbot can read ({path} is not readable).")
    return path


def _account(get, name: str) -> str | None:
    raw = get(name)
    if raw is not None and not re.fullmatch(r"\d{12}", raw):
        raise ConfigError(f"{name} is malformed: it should hold a 12-digit AWS account ID, e.g. 123456789012.")
    return raw


def _workstation(get) -> str | None:
    raw = get("IR_WORKSTATION_INSTANCE")
    if raw is not None and not re.fullmatch(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})|arn:aws[a-z-]*:ec2:[a-z0-9-]+:\d{12}:instance/i-(?:[0-9a-f]{8}|[0-9a-f]{17})", raw):
        raise ConfigError("IR_WORKSTATION_INSTANCE is malformed: it should hold an instance ID (i-0123456789abcdef0) "
                          "or an instance ARN (arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0).")
    return raw


def _accounts(get) -> tuple[str, ...] | str:
    raw = get("IR_ACCOUNTS")
    if raw is None:
        return ()
    if raw.lower() == "org":
        return "org"
    listed = tuple(a.strip() for a in raw.split(",") if a.strip())
    if not listed or any(not re.fullmatch(r"\d{12}", a) for a in listed):
        raise ConfigError("IR_ACCOUNTS is malformed: it should hold 12-digit AWS account IDs, comma-separated, or org.")
    return listed


def _role_name(get) -> str:
    raw = get("IR_ACCOUNT_ROLE") or "irbot-responder"
    if not re.fullmatch(r"[\w+=,.@/-]{1,64}", raw):
        raise ConfigError("IR_ACCOUNT_ROLE is malformed: it should hold an IAM role name (or path/name), e.g. irbot-responder.")
    return raw


def _external_id(get) -> str | None:
    raw = get("IR_ROLE_EXTERNAL_ID")
    if raw is not None and not re.fullmatch(r"[\w+=,.@:/-]{2,1224}", raw):
        raise ConfigError("IR_ROLE_EXTERNAL_ID is malformed: it should hold 2-1224 letters, digits or +=,.@:/-.")
    return raw


def _security_groups(get, name: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in (get(name) or "").split(",") if g.strip())
    if any(not re.fullmatch(r"sg-(?:[0-9a-f]{8}|[0-9a-f]{17})", g) for g in groups):
        raise ConfigError(f"{name} is malformed: it should hold security group IDs, comma-separated, e.g. sg-0123456789abcdef0.")
    return groups


def _analyst_cidr(get) -> str | None:
    import ipaddress

    raw = get("IR_ANALYST_CIDR")
    if raw is None:
        return None
    try:
        network = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        network = None
    if network is None or network.prefixlen == 0:
        raise ConfigError("IR_ANALYST_CIDR is malformed: it should hold the analyst's address range, e.g. 203.0.113.7/32 (never 0.0.0.0/0).")
    return str(network)


def _group(get, name: str, example: str) -> str | None:
    raw = get(name)
    if raw is None:
        return None
    group = raw.lstrip("@")
    if not re.match(r"^[A-Za-z0-9._-]{1,80}$", group):
        raise ConfigError(f"{name} is malformed: it should hold a Slack user group ID (S0123ABCD) or handle ({example}).")
    return group


def _channel(get, name: str) -> str | None:
    raw = get(name)
    if raw is not None and not re.fullmatch(r"[CG][A-Z0-9]{2,20}", raw):
        raise ConfigError(f"{name} is malformed: it should hold a Slack channel ID such as C0123ABCDEF (the channel's details show it).")
    return raw


def check_quorum(settings: Settings) -> None:
    """Refuse a quorum the configured approvers can never meet: every gated request would wait until it expired.

    Only a fixed list can be counted; a user group may grow, so with one nothing is refused. The requester never
    approves their own request, so when every responder is an approver, one approver fewer is left to each."""
    if settings.approver_group:
        return
    if settings.responder_group or not settings.responders:
        most = len(settings.approvers)
    else:
        most = max(len(settings.approvers - {responder}) for responder in settings.responders)
    if settings.approval_quorum > most:
        raise ConfigError(
            f"IR_APPROVAL_QUORUM is {settings.approval_quorum}, but at most {most} approver{'' if most == 1 else 's'} "
            f"(IR_APPROVERS, besides the requester) could ever approve a request, so none could ever run: "
            f"lower IR_APPROVAL_QUORUM or add approvers to IR_APPROVERS or IR_APPROVER_GROUP.")


def _user_ids(get, name: str) -> frozenset[str]:
    raw = get(name)
    if raw is None:
        return frozenset()
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [i for i in ids if not USER_ID.match(i)]
    if bad or not ids:
        raise ConfigError(
            f"{name} is malformed: it should hold comma-separated Slack user IDs such as U012ABCDEF,U034GHIJKL."
        )
    return frozenset(ids)
