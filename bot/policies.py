"""The IAM policies irbot's AWS identities need, built from what each caller declares (actions.aws): irbot's
own role (all processes, one process or one action), and the role it assumes in every member account."""

from __future__ import annotations

import re

import actions
from actions.accounts import ACCOUNT_LOOKUP, ROLE_SWITCH
from actions.aws import Declaration
from core.audit import AUDIT_RESUME, AUDIT_SEAL, AUDIT_VERIFY
from core.evidence import EVIDENCE
from core.settings import ConfigError
from findings.consumer import FINDINGS

# Who calls AWS, per process: the bucket-bound declarations apart from the rest.
BUCKET_CALLERS = {"serve": (AUDIT_RESUME,), "worker": (EVIDENCE, AUDIT_SEAL, AUDIT_RESUME), "audit": (AUDIT_VERIFY,), "findings": ()}
OTHER_CALLERS = {"findings": (FINDINGS,), "serve": (), "worker": (), "audit": ()}
# Who asks which account a key belongs to (and lists the organization), and who switches into member accounts.
ACCOUNT_CALLERS = ("serve", "worker")
SWITCHERS = ("worker",)
ROLE_ARN = re.compile(r"arn:aws(?:-[a-z-]+)?:iam::\d{12}:role/[\w+=,.@/-]{1,512}")


def _statement(sid: str, declarations: list[Declaration], resource, *, leave_out: frozenset[str] = frozenset()) -> dict | None:
    wanted = sorted({p for d in declarations for p in d.permissions} - leave_out - {"sts:GetCallerIdentity"})
    return {"Sid": sid, "Effect": "Allow", "Action": wanted, "Resource": resource} if wanted else None


def policy_document(bucket: str, *, process: str | None = None, action: str | None = None, role: str = "irbot-responder",
                    organization: bool = False, partition: str = "aws") -> dict:
    """One policy for everything (default), one process's (worker, findings, audit), or one action's.
    ``role``: the member role irbot assumes; ``organization``: IR_ACCOUNTS=org, so it lists the organization's accounts."""
    if action is not None:
        spec = actions.get(action)
        if spec is None:
            raise ConfigError(f"no action called {action!r}; the actions are {', '.join(sorted(actions.REGISTRY))}.")
        specs, buckets, others, lookups, switches = [spec], [], [], False, False
    else:
        processes = [process] if process else list(BUCKET_CALLERS)
        specs = list(actions.REGISTRY.values()) if "worker" in processes else []
        buckets = [d for p in processes for d in BUCKET_CALLERS[p]]
        others = [d for p in processes for d in OTHER_CALLERS[p]]
        lookups = any(p in ACCOUNT_CALLERS for p in processes)
        switches = any(p in SWITCHERS for p in processes)
    statements = [
        _statement("IrbotActions", [s.declaration for s in specs], "*"),
        _statement("IrbotEvidence", buckets, [f"arn:{partition}:s3:::{bucket}", f"arn:{partition}:s3:::{bucket}/*"]),
        _statement("IrbotQueues", others, "*"),
        _statement("IrbotAccounts", [ACCOUNT_LOOKUP] if lookups else [], "*",
                   leave_out=frozenset() if organization else frozenset({"organizations:ListAccounts"})),
        # Into exactly the member role, in any account: which accounts irbot acts in is IR_ACCOUNTS, checked before any switch.
        _statement("IrbotMemberRoles", [ROLE_SWITCH], f"arn:{partition}:iam::*:role/{role}") if switches else None,
    ]
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s]}


def member_policies(hub_role: str, *, external_id: str | None = None) -> dict:
    """The role to deploy in every member account (named IR_ACCOUNT_ROLE): what the actions call there, and a trust
    policy that admits exactly irbot's own role (with the external ID, when set) and lets it name the person who asked."""
    if not ROLE_ARN.fullmatch(hub_role):
        raise ConfigError(f"--hub-role needs irbot's own role ARN, like arn:aws:iam::123456789012:role/irbot; {hub_role!r} is not one.")
    condition = {"Condition": {"StringEquals": {"sts:ExternalId": external_id}}} if external_id else {}
    return {
        "PermissionsPolicy": {"Version": "2012-10-17", "Statement": [
            _statement("IrbotActions", [s.declaration for s in actions.REGISTRY.values()], "*")]},
        "TrustPolicy": {"Version": "2012-10-17", "Statement": [
            {"Sid": "IrbotHub", "Effect": "Allow", "Principal": {"AWS": hub_role}, "Action": "sts:AssumeRole", **condition},
            # SourceIdentity carries the Slack user who asked into this account's CloudTrail.
            {"Sid": "IrbotSourceIdentity", "Effect": "Allow", "Principal": {"AWS": hub_role}, "Action": "sts:SetSourceIdentity"},
        ]},
    }
