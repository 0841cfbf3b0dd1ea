"""The IAM policies irbot's AWS identity needs, built from what each caller declares (actions.aws)."""

from __future__ import annotations

import actions
from actions.aws import Declaration
from core.audit import AUDIT_RESUME, AUDIT_SEAL, AUDIT_VERIFY
from core.evidence import EVIDENCE
from findings.consumer import FINDINGS

# Who calls AWS, per process: the bucket-bound declarations apart from the rest.
BUCKET_CALLERS = {"serve": (AUDIT_RESUME,), "worker": (EVIDENCE, AUDIT_SEAL, AUDIT_RESUME), "audit": (AUDIT_VERIFY,), "findings": ()}
OTHER_CALLERS = {"findings": (FINDINGS,), "serve": (), "worker": (), "audit": ()}


def _statement(sid: str, declarations: list[Declaration], resource) -> dict | None:
    wanted = sorted({p for d in declarations for p in d.permissions})
    return {"Sid": sid, "Effect": "Allow", "Action": wanted, "Resource": resource} if wanted else None


def policy_document(bucket: str, *, process: str | None = None, action: str | None = None) -> dict:
    """One policy for everything (default), one process's (worker, findings, audit), or one action's."""
    if action is not None:
        spec = actions.get(action)
        if spec is None:
            raise SystemExit(f"irbot: no action called {action!r}; the actions are {', '.join(sorted(actions.REGISTRY))}.")
        specs, buckets, others = [spec], [], []
    else:
        processes = [process] if process else list(BUCKET_CALLERS)
        specs = list(actions.REGISTRY.values()) if "worker" in processes else []
        buckets = [d for p in processes for d in BUCKET_CALLERS[p]]
        others = [d for p in processes for d in OTHER_CALLERS[p]]
    statements = [
        _statement("IrbotActions", [s.declaration for s in specs], "*"),
        _statement("IrbotEvidence", buckets, [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]),
        _statement("IrbotQueues", others, "*"),
    ]
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s]}
