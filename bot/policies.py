"""The IAM policies irbot's AWS identities need, built from what each caller declares (actions.aws) and
what AWS checks on its behalf (actions.registry.Grant): irbot's own role (all processes, one process or one
action), its permissions boundary, and the role it assumes in every member account.

Each role's policy also denies it the calls that would let a thief of its credentials raise them: writing or
attaching policies, boundaries, keys or trust on irbot's own roles and policies and the break-glass principals.

IAM caps a managed policy at 6,144 characters, whitespace not counted (MANAGED_POLICY_LIMIT), and the hub policy
and the boundary are managed policies. So the action statement grants read calls as wildcards of read verbs
(READ_WILDCARDS) and the Deny names IAM's write verbs as wildcards (IAM_WRITES): a new read call or a new IAM
action then costs no characters, and a Deny's wildcard is the stricter choice. The declarations themselves
stay exact: actions.aws refuses, in the tests, every call an action doesn't declare by name.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

import actions
from actions.accounts import ACCOUNT_LOOKUP, ROLE_SWITCH
from actions.aws import Declaration
from actions.inventory import INVENTORY
from actions.registry import ActionSpec
from actions.scopes import SCOPED, scoped_statements
from core.audit import AUDIT_RESUME, AUDIT_SEAL, AUDIT_VERIFY
from core.evidence import EVIDENCE, STAGE_PERMISSIONS, STAGING
from core.settings import ConfigError
from findings.consumer import FINDINGS

# Who calls AWS, per process: the bucket-bound declarations apart from the rest.
BUCKET_CALLERS = {"serve": (AUDIT_RESUME,), "worker": (EVIDENCE, AUDIT_SEAL, AUDIT_RESUME), "audit": (AUDIT_VERIFY,), "findings": ()}
OTHER_CALLERS = {"findings": (FINDINGS,), "serve": (), "worker": (INVENTORY,), "audit": ()}
# Who asks which account a key belongs to (and lists the organization), and who switches into member accounts.
ACCOUNT_CALLERS = ("serve", "worker")
SWITCHERS = ("worker",)
PARTITIONS = ("aws", "aws-cn", "aws-us-gov")
ROLE_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
PRINCIPAL_ARN = re.compile(r"arn:aws(?:-cn|-us-gov)?:iam::\d{12}:(?:role|user)/[\w+=,.@/-]{1,512}")
# S3's rules for a bucket name: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end,
# no "..", not an IP address, none of the reserved prefixes and suffixes.
BUCKET = re.compile(r"(?!xn--|sthree-|amzn-s3-demo-)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)(?!.*(?:-s3alias|--ol-s3|--x-s3)$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

# IAM's limit for a managed policy, in characters of its JSON without whitespace.
MANAGED_POLICY_LIMIT = 6144

# Read verbs the action statement grants on "*" as one wildcard per service and verb (ec2:Describe*), for the
# calls an action declares. Only where every action of that verb is Read or List in AWS's service authorization
# reference (tests/test_iam_policy.py checks it against parliament's copy) and reads settings, not data or
# secrets; a service and verb not listed here are granted call by call. A listed verb no action calls yet adds nothing.
READ_WILDCARDS = {
    "autoscaling": ("Describe",),
    "cloudtrail": ("Describe", "Get"),  # trails, their status and selectors, and Lake's query results: events, as LookupEvents
    "cloudwatch": ("Describe",),
    "config": ("Describe",),
    "ec2": ("Describe",),  # not Get: GetPasswordData is a Windows instance's administrator password
    "elasticloadbalancing": ("Describe",),
    "events": ("List",),  # rules and their targets (/ir prep's findings-rule check)
    "guardduty": ("Get", "List"),  # detectors and their settings, and findings, which irbot is sent anyway
    "iam": ("Get", "List"),  # IAM hands a secret out only as it makes or resets one, never to a Get
    "lambda": ("List",),
    "securityhub": ("Describe",),  # the hub, its standards and products: settings  # not Get: GetFunction hands out the code, GetFunctionConfiguration the environment
    "organizations": ("Describe",),  # the organization, its accounts, OUs and policies: settings
    "s3": ("GetBucket",),  # a bucket's settings; not GetObject nor List*: ListBucket on "*" lists every bucket's objects
}

# What would let whoever holds irbot's credentials raise them, or lock responders out of their own way in, on
# irbot's own roles and policies and the break-glass principals: every IAM verb that writes a role, a user or a
# managed policy (AWS's Write, Permissions management and Tagging actions on those; tests/test_iam_policy.py
# checks the list against parliament's copy of them), denied outright. An explicit Deny wins over any Allow, a
# self-granted one included. iam:PassRole is not among them: it changes no role. Nor are iam:AddUserToGroup and
# iam:RemoveUserFromGroup: IAM authorizes them on the group, so a Deny naming users never held them. What irbot
# itself writes (revoke-key's keys and quarantine policy, a compromised role's session cut-off) is on other principals.
IAM_WRITES = ("iam:Attach*", "iam:Change*", "iam:Create*", "iam:Deactivate*", "iam:Delete*", "iam:Detach*",
              "iam:Enable*", "iam:Put*", "iam:Reset*", "iam:Resync*", "iam:Set*", "iam:Tag*", "iam:Untag*",
              "iam:Update*", "iam:Upload*")


@dataclass(frozen=True)
class Protected:
    """Whose permissions irbot may not touch: its own roles (by name, in every account), its own managed policies,
    and the break-glass principals (by ARN)."""

    hub_role: str = "irbot"
    member_role: str = "irbot-responder"
    break_glass: tuple[str, ...] = ()

    def statement(self, partition: str) -> dict:
        roles = sorted({f"arn:{partition}:iam::*:role/{name}" for name in (self.hub_role, self.member_role)})
        # irbot's own managed policies (the hub policy, the boundary, the quarantine policy): no new version, no other default, kept.
        policies = f"arn:{partition}:iam::*:policy/irbot*"
        return {"Sid": "NoEscalation", "Effect": "Deny", "Action": list(IAM_WRITES),
                "Resource": [*roles, policies, *sorted(self.break_glass)]}


def _actions(specs: list[ActionSpec], partition: str, also: tuple[Declaration, ...] = ()) -> list[dict]:
    """The actions' calls: unscoped ones in one statement, with ``also``'s (calls on any resource too: one
    statement costs fewer characters than several), read calls as wildcards; scoped ones (actions.scopes) each on
    their resources."""
    wanted = {p for s in specs for p in s.permissions}
    unscoped = _statement("AnyResource", [*(s.declaration for s in specs), *also], "*", leave_out=SCOPED)
    if unscoped:
        unscoped["Action"] = read_wildcards(unscoped["Action"])
    return [s for s in (unscoped, *scoped_statements(wanted, partition)) if s]


def read_wildcards(calls: list[str]) -> list[str]:
    """``calls`` as the action statement grants them: a read call of READ_WILDCARDS as its verb's wildcard
    (ec2:DescribeInstances as ec2:Describe*), every other call by name."""
    return sorted({_read_wildcard(name) for name in calls})


def _read_wildcard(name: str) -> str:
    service, _, operation = name.partition(":")
    for verb in READ_WILDCARDS.get(service, ()):
        wildcard = f"{service}:{verb}*"
        # The verb whole (Get, not Getaway), and never over a call actions.scopes grants only on some resources.
        if (operation.startswith(verb) and operation[len(verb):][:1].isupper()
                and not any(fnmatch.fnmatchcase(scoped, wildcard) for scoped in SCOPED)):
            return wildcard
    return name


def _statement(sid: str, declarations: list[Declaration], resource, *, leave_out: frozenset[str] = frozenset()) -> dict | None:
    # sts:GetCallerIdentity needs no permission: IAM can't deny it.
    wanted = sorted({p for d in declarations for p in d.permissions} - leave_out - {"sts:GetCallerIdentity"})
    return {"Sid": sid, "Effect": "Allow", "Action": wanted, "Resource": resource} if wanted else None


def _grants(specs: list[ActionSpec]) -> list[dict]:
    """One statement per distinct grant (release's PassRole, snapshot's KMS), with its condition."""
    found = {grant.sid: grant for spec in specs for grant in spec.grants}
    return [{"Sid": g.sid, "Effect": "Allow", "Action": list(g.actions), "Resource": "*", "Condition": g.condition}
            for _, g in sorted(found.items())]


def checked_bucket(bucket: str | None) -> str:
    if not bucket:
        raise ConfigError("iam-policy needs the evidence bucket: --bucket NAME, or IR_EVIDENCE_BUCKET.")
    if not BUCKET.fullmatch(bucket):
        raise ConfigError(f"--bucket {bucket!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots, hyphens).")
    return bucket


# irbot's own role holds one managed policy per part: "core" (every process's calls, the actions' but those declared
# elsewhere), "disks" (/ir image and /ir workstation) and "readiness" (/ir prep's reads). One policy would be over
# IAM's 6,144 characters.
POLICY_PARTS = {"core": "irbot-hub", "disks": "irbot-disks", "readiness": "irbot-readiness"}


def policy_document(bucket: str, *, process: str | None = None, action: str | None = None, role: str = "irbot-responder",
                    organization: bool = False, partition: str = "aws", protected: Protected | None = None, part: str = "core") -> dict:
    """The core policy (default: every process), one process's (serve, worker, findings, audit), one action's, or with
    ``part="readiness"`` the readiness checks' (POLICY_PARTS). ``role``: the member role irbot assumes;
    ``organization``: IR_ACCOUNTS=org, so it lists the organization's accounts."""
    bucket = checked_bucket(bucket)
    if partition not in PARTITIONS:
        raise ConfigError(f"--partition must be one of {', '.join(PARTITIONS)}.")
    protected = protected or Protected(member_role=role)
    if action is not None:
        spec = actions.get(action)
        if spec is None:
            raise ConfigError(f"no action called {action!r}; the actions are {', '.join(sorted(actions.REGISTRY))}.")
        specs, buckets, others, lookups, switches = [spec], [], [], False, False
    elif part != "core":
        if part not in POLICY_PARTS:
            raise ConfigError(f"no policy part called {part!r}; the parts are {', '.join(POLICY_PARTS)}.")
        specs, buckets, others, lookups, switches = [s for s in actions.REGISTRY.values() if s.policy == part], [], [], False, False
    else:
        processes = [process] if process else list(BUCKET_CALLERS)
        specs = [s for s in actions.REGISTRY.values() if s.policy == "core"] if "worker" in processes else []
        buckets = [d for p in processes for d in BUCKET_CALLERS[p]]
        others = [d for p in processes for d in OTHER_CALLERS[p]]
        lookups = any(p in ACCOUNT_CALLERS for p in processes)
        switches = any(p in SWITCHERS for p in processes)
    # Which account a key belongs to; the organization's accounts only with IR_ACCOUNTS=org.
    lookup = ACCOUNT_LOOKUP if organization else Declaration(ACCOUNT_LOOKUP.who, ACCOUNT_LOOKUP.permissions - {"organizations:ListAccounts"})
    statements = [
        *_actions(specs, partition, also=(*others, *([lookup] if lookups else []))),
        *_grants(specs),
        _statement("Evidence", buckets, [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"],
                   leave_out=frozenset(STAGE_PERMISSIONS)),
        # Deletes only where streams are staged (core.evidence): irbot's credentials can't delete evidence.
        _statement("EvidenceStages", buckets, f"arn:{partition}:s3:::{bucket}/{STAGING}*",
                   leave_out=frozenset(p for d in buckets for p in d.permissions) - frozenset(STAGE_PERMISSIONS)),
        # Into exactly the member role, in any account: which accounts irbot acts in is IR_ACCOUNTS, checked before any switch.
        _statement("MemberRoles", [ROLE_SWITCH], f"arn:{partition}:iam::*:role/{role}") if switches else None,
    ]
    statements = [s for s in statements if s]
    if any(a.startswith("iam:") for s in statements for a in s["Action"]):  # one action's policy too: revoke-key's alone writes policies
        statements.append(protected.statement(partition))
    return {"Version": "2012-10-17", "Statement": statements}


def boundary_document(bucket: str, *, role: str = "irbot-responder", organization: bool = False, partition: str = "aws",
                      protected: Protected | None = None) -> dict:
    """The permissions boundary for irbot's own role: every call any of its policies allows, on any resource, and
    the same denies. An Allow irbot's role gave itself (which the denies refuse to begin with) would still be cut to
    the calls irbot makes. Where each call may act (the scopes, the evidence bucket, the member role) is the core
    policy's to say: with them the boundary would be over IAM's 6,144 characters, and the bucket policy refuses
    deletes of evidence whoever asks."""
    parts = [policy_document(bucket, role=role, organization=organization, partition=partition, protected=protected, part=part)
             for part in POLICY_PARTS]
    allowed = sorted({a for d in parts for s in d["Statement"] if s["Effect"] == "Allow" for a in s["Action"]})
    denies = [s for s in parts[0]["Statement"] if s["Effect"] == "Deny"]
    return {"Version": "2012-10-17", "Statement": [{"Sid": "Ceiling", "Effect": "Allow", "Action": allowed, "Resource": "*"}, *denies]}


def member_policies(hub_role: str, *, external_id: str | None = None, member_role: str = "irbot-responder",
                    break_glass: tuple[str, ...] = ()) -> dict:
    """The role to deploy in every member account (named IR_ACCOUNT_ROLE): what the actions call there, and a trust
    policy that admits exactly irbot's own role (with the external ID, when set) and lets it name the person who asked."""
    if not ROLE_ARN.fullmatch(hub_role):
        raise ConfigError(f"--hub-role needs irbot's own role ARN, like arn:aws:iam::123456789012:role/irbot; {hub_role!r} is not one.")
    partition = hub_role.split(":")[1]
    protected = Protected(hub_role=hub_role.rsplit("/", 1)[-1], member_role=member_role, break_glass=break_glass)
    specs = list(actions.REGISTRY.values())
    # Every session names the person who asked (SourceIdentity): a stolen hub credential can't come in anonymously.
    condition = {"Condition": {"Null": {"sts:SourceIdentity": "false"},
                               **({"StringEquals": {"sts:ExternalId": external_id}} if external_id else {})}}
    return {
        "PermissionsPolicy": {"Version": "2012-10-17", "Statement": [
            *_actions(specs, partition, also=(INVENTORY,)), *_grants(specs), protected.statement(partition)]},
        "TrustPolicy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "IrbotHub", "Effect": "Allow", "Principal": {"AWS": hub_role}, "Action": "sts:AssumeRole", **condition},
            # SourceIdentity carries the Slack user who asked into this account's CloudTrail.
            {"Sid": "IrbotSourceIdentity", "Effect": "Allow", "Principal": {"AWS": hub_role}, "Action": "sts:SetSourceIdentity"},
        ]},
    }
