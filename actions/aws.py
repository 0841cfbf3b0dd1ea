"""Making AWS calls the same way everywhere: retries, timeouts, error sentences, and declared permissions.

Every AWS client irbot uses is made here. Each caller declares the IAM actions it may call (an
action in its registration; the evidence store, the audit sealer and the findings consumer in a
Declaration of their own). With IRBOT_PERMISSION_CHECK set to a file path, as the test suite
does, a call outside the caller's declaration is written to that file and refused, so a
declaration that is wrong can't go unnoticed.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from actions import tally
from actions.client_classes import reuse_client_classes
from actions.errors import ActionError, error_code, explain

reuse_client_classes()

# Standard retry mode, as every AWS SDK has it: exponential backoff with full jitter (up to 20 s a
# wait) on throttling codes, 5xx answers and timeouts, and a retry quota per client so a dead
# endpoint isn't hammered. Not adaptive mode: its client-side rate limiter learns per client, and
# irbot's clients live for one action, so it would learn little and could hold a step back.
# Eight attempts wait about 45 s at most on average: enough for a storm's burst, short enough that a
# responder hears of it while it still matters. AWS_MAX_ATTEMPTS / AWS_RETRY_MODE change them, as
# for any AWS SDK.
DEFAULT_ATTEMPTS = 8


def client_config() -> Config:
    attempts = os.environ.get("AWS_MAX_ATTEMPTS", "")
    mode = os.environ.get("AWS_RETRY_MODE", "")
    return Config(
        retries={"mode": mode if mode in ("standard", "adaptive", "legacy") else "standard",
                 "max_attempts": int(attempts) if attempts.isdigit() and 0 < int(attempts) <= 20 else DEFAULT_ATTEMPTS},
        connect_timeout=5,
        read_timeout=60,
        user_agent_extra="irbot",
    )


CHECK_VARIABLE = "IRBOT_PERMISSION_CHECK"

# Where the IAM action differs from the API operation's name (S3's are the usual suspects).
IAM_NAMES = {
    "s3:HeadObject": "s3:GetObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:CopyObject": "s3:PutObject",
    "s3:UploadPartCopy": "s3:PutObject",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "s3:PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    # S3 Control signs as s3 and shares an operation's name with S3's bucket-level one: keyed by its own service name.
    "s3control:GetPublicAccessBlock": "s3:GetAccountPublicAccessBlock",
}
# Calls that need no permission at all.
ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity"})


@dataclass(frozen=True)
class Declaration:
    """Who makes AWS calls, and the IAM actions they may call."""

    who: str
    permissions: frozenset[str]


class UndeclaredCall(Exception):
    """A call outside the caller's declaration: a bug in irbot, raised only when the check is on."""


# Services whose requests are signed under another name than their IAM prefix.
IAM_PREFIXES = {"monitoring": "cloudwatch"}


def iam_action(signing_name: str, operation: str, service: str = "") -> str:
    name = f"{IAM_PREFIXES.get(signing_name, signing_name)}:{operation}"
    return IAM_NAMES.get(f"{service}:{operation}") or IAM_NAMES.get(name, name)


def declare(session: boto3.Session, declaration: Declaration) -> boto3.Session:
    """Mark ``session``: clients made from it without a declaration of their own act under this one."""
    session.irbot_declaration = declaration  # type: ignore[attr-defined]
    return session


# boto3 sessions are not thread-safe, clients are: hunts make clients from one session on many threads.
_MAKING_CLIENTS = threading.Lock()


def client(session: boto3.Session, service: str, region: str, *, declared: Declaration | None = None, config: Config | None = None):
    with _MAKING_CLIENTS:
        aws_client = session.client(service, region_name=region, config=client_config().merge(config) if config else client_config())
    aws_client.meta.events.register("request-created", _retry_counter(aws_client.meta.service_model.service_name))
    check_file = os.environ.get(CHECK_VARIABLE)
    if check_file:
        declaration = declared or getattr(session, "irbot_declaration", None)
        model = aws_client.meta.service_model
        aws_client.meta.events.register("before-call", _checker(declaration, model.signing_name, check_file, model.service_name))
    return aws_client


def _retry_counter(service: str):
    # botocore asks every 'needs-retry' handler, and only the retry handler's answer says whether it
    # retries. Each attempt, though, makes a new request carrying its attempt number: attempt 2 and
    # later are retries, counted once each, whatever made them (throttling, a 5xx, a timeout).
    def count(request, **_: Any) -> None:
        if (getattr(request, "context", None) or {}).get("retries", {}).get("attempt", 1) > 1:
            tally.count("irbot_aws_retries", service=service)

    return count


def _checker(declaration: Declaration | None, signing_name: str, check_file: str, service: str = ""):
    def check(model, **_: Any) -> None:
        needed = iam_action(signing_name, model.name, service)
        if needed in ALWAYS_ALLOWED or (declaration is not None and needed in declaration.permissions):
            return
        who = declaration.who if declaration else "a caller with no declaration"
        with open(check_file, "a", encoding="utf-8") as out:
            out.write(json.dumps({"who": who, "call": needed}) + "\n")
        raise UndeclaredCall(f"{who} called {needed}, which it does not declare")

    return check


def call(aws_client, operation: str, **params: Any) -> dict:
    """Call ``operation`` (the boto3 method name); failures become an ActionError sentence with AWS's code."""
    try:
        response = getattr(aws_client, operation)(**params)
    except (ClientError, BotoCoreError) as exc:
        raise _error(aws_client, exc) from exc
    response.pop("ResponseMetadata", None)
    return response


def paginate(aws_client, operation: str, key: str, **params: Any) -> list:
    """All items under ``key`` across the pages of ``operation``."""
    try:
        items: list = []
        for page in aws_client.get_paginator(operation).paginate(**params):
            items.extend(page.get(key, []))
        return items
    except (ClientError, BotoCoreError) as exc:
        raise _error(aws_client, exc) from exc


def _error(aws_client, exc: BaseException) -> ActionError:
    sentence = explain(exc, service=aws_client.meta.service_model.signing_name, region=aws_client.meta.region_name)
    return ActionError(sentence, code=error_code(exc))
