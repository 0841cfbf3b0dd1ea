"""Job wrappers: what an RQ worker runs for each /ir command."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Callable

import boto3
import structlog
from rq import get_current_job
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from actions import aws
from actions.artefacts import to_json_bytes
from actions.collect import collect as collect_action
from actions.errors import ActionError
from workers import messages
from workers.evidence import EvidenceStore, StoredObject
from workers.logs import get_logger
from workers.report import post, slack_client
from workers.request import CommandRequest
from workers.settings import Settings, load

log = get_logger(__name__)

Outcome = tuple[str, list[dict], dict]  # channel text, blocks, job result


def run_command(data: dict) -> dict:
    """Run one /ir command and report it in the channel. The RQ entry point for every action."""
    request = CommandRequest.from_dict(data)
    job = get_current_job()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request.id, job_id=job.id if job else None, command=request.command)
    settings = load(os.environ, "worker")
    client = slack_client(settings)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=3)]
    log.info("job started", targets=list(request.targets), user=request.user_id, channel=request.channel_id)
    handler = HANDLERS.get(request.command)
    try:
        return _run(request, settings, client, handler)
    finally:
        # A SimpleWorker runs jobs in its own process: don't let this job's IDs tag later lines.
        structlog.contextvars.clear_contextvars()


def _run(request: CommandRequest, settings: Settings, client, handler) -> dict:
    try:
        if handler is None:
            raise ActionError(f"/ir {request.command} is not available yet.")
        text, blocks, outcome = handler(request, settings)
    except ActionError as exc:
        log.warning("job failed", reason=str(exc))
        text, blocks = messages.failed(request, str(exc))
        post(client, request, text, blocks)
        return {"ok": False, "error": str(exc)}
    except Exception:
        # The channel gets a sentence; the traceback stays in the worker log, and RQ marks the job failed.
        log.exception("job crashed")
        text, blocks = messages.failed(request, f"irbot hit an internal error (request {request.id}); the worker log has the details.")
        post(client, request, text, blocks)
        raise
    post(client, request, text, blocks)
    log.info("job finished", **{k: v for k, v in outcome.items() if k != "objects"})
    return outcome


def evidence_store(settings: Settings, session: boto3.Session) -> EvidenceStore:
    return EvidenceStore(
        aws.client(session, "s3", settings.aws_region),
        settings.evidence_bucket,
        lock_mode=settings.evidence_lock_mode,
        retention_days=settings.evidence_retention_days,
        link_expiry_seconds=settings.link_expiry_seconds,
    )


def evidence_prefix(request: CommandRequest, target: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{request.incident or request.channel_id}/{target}/{stamp}-{request.id}/"


def collect(request: CommandRequest, settings: Settings) -> Outcome:
    session = boto3.Session()
    region = request.region or settings.aws_region
    instance_id = request.targets[0]
    store = evidence_store(settings, session)
    protection = store.protection()  # before touching the instance: a missing bucket fails fast
    result = collect_action(session, instance_id, region)

    prefix = evidence_prefix(request, instance_id)
    stored: list[StoredObject] = [
        store.put(prefix + a.name, a.body, name=a.name, content_type=a.content_type, description=a.description)
        for a in result.artefacts
    ]
    manifest = {
        "request": request.to_dict() | {"response_url": None},
        "job_id": (get_current_job().id if get_current_job() else None),
        "action": result.action,
        "target": result.target,
        "region": result.region,
        "facts": result.facts,
        "notes": result.notes,
        "protection": {"locked": protection.locked, "mode": protection.mode, "retain_until": protection.retain_until},
        "objects": [
            {"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256, "version_id": o.version_id, "description": o.description}
            for o in stored
        ],
    }
    stored.append(
        store.put(prefix + "manifest.json", to_json_bytes(manifest), name="manifest.json", content_type="application/json",
                  description="What was collected, by whom, when, with each object's digest")
    )
    text, blocks = messages.evidence_saved(request, result, stored, protection, store.bucket, prefix)
    outcome = {
        "ok": True,
        "prefix": prefix,
        "objects": [{"key": o.key, "sha256": o.sha256, "size": o.size} for o in stored],
        "notes": result.notes,
    }
    return text, blocks, outcome


HANDLERS: dict[str, Callable[[CommandRequest, Settings], Outcome]] = {"collect": collect}
