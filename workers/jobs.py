"""Job entry points: what an RQ worker runs for each /ir command, for any declared action.

Read-only commands run straight away (run_command). Gated commands go through the approval
book: prepare_request posts the dry-run plan with the buttons, execute_request runs the approved
action once, expire_request ends what nobody approved in time. What differs between actions is
read from their declarations (actions.registry), never from their names.
"""

from __future__ import annotations

import functools
import json
from datetime import timedelta

import structlog

import actions
from actions.artefacts import Artefact, to_json_bytes
from actions.errors import ActionError
from actions.registry import ActionSpec, Reply, Risk
from actions.steps import Outcome, StepLog
from actions.words import count
from chat import cards, messages, threads
from chat import readiness as chat_readiness
from chat import analysis as chat_analysis
from core import readiness
from core.logs import get_logger
from core.queues import queue
from core.request import CommandRequest
from workers import batches
from workers.context import JobContext, bind_logs
from workers.progress import ProgressMessage
from workers.running import card_key, conclude, expire_now, incident_changed, load, post_card, redraw_detail, run_action, run_started, run_targets

log = get_logger(__name__)

def _with_clean_logs(func):
    """Unbind the request's IDs after the job (a SimpleWorker goes on to the next one)."""

    @functools.wraps(func)
    def wrapper(data):
        try:
            return func(data)
        finally:
            structlog.contextvars.clear_contextvars()

    return wrapper


# -- read-only commands and dry runs ------------------------------------------------------


@_with_clean_logs
def run_command(data: dict) -> dict:
    """Run one read-only /ir command (or a dry run) and report it in the channel."""
    request = CommandRequest.from_dict(data)
    bind_logs(request)
    ctx = JobContext(request)
    log.info("job started", targets=list(request.targets), user=request.user_id, channel=request.channel_id)
    ctx.record("job.started", "running", job_id=ctx.job_id)
    spec = actions.get(request.command)
    if spec is not None and spec.reply is not Reply.EVIDENCE:
        # The request's one top-level message, posted now so its steps can go in its thread as they finish; its outcome
        # replaces it. An evidence request's message is its outcome, posted once the evidence is stored.
        post_card(ctx, *threads.request_started(request, ctx.region))
    try:
        if spec is None:
            raise ActionError(f"/ir {request.command} is not available yet.")
        if spec.risk is Risk.CHANGE and not request.options.get("dry_run"):
            # Worker-side half of the two-person rule: a changing action never runs from this path.
            ctx.record("job.refused", "refused", why="needs approval")
            raise ActionError(f"/ir {request.command} changes AWS and needs approval by a second person; it was not run.")
        reply = REPLIES[spec.reply]
        summary, detail, outcome = reply(ctx, spec)
    except ActionError as exc:
        log.warning("job failed", reason=str(exc))
        ctx.record("job.finished", "failed", error=str(exc))
        conclude(ctx, messages.failed(request, str(exc)))
        return {"ok": False, "error": str(exc)}
    except Exception:
        # The channel gets a sentence; the traceback stays in the worker log, and RQ marks the job failed.
        log.exception("job crashed")
        ctx.record("job.finished", "crashed")
        conclude(ctx, messages.failed(request, f"irbot hit an internal error (request {request.id}); the worker log has the details."))
        raise
    ctx.record("job.finished", "ok" if outcome.get("ok") else "failed", notes=outcome.get("notes", []))
    conclude(ctx, summary, detail, detail_ts=outcome.pop("detail_ts", ""))
    log.info("job finished", **{k: v for k, v in outcome.items() if k not in ("objects", "facts", "steps")})
    return outcome


def evidence_reply(ctx: JobContext, spec: ActionSpec) -> tuple[tuple, tuple, dict]:
    """An action whose outcome is evidence: every object stored with its digest, then a manifest of them all."""
    request, store = ctx.request, ctx.store
    protection = store.protection()  # before touching the target: a missing bucket fails fast
    result = run_action(ctx, spec, request.targets[0], dry_run=False, steps=StepLog())
    for artefact in result.artefacts:
        ctx.keep(artefact)
    manifest = {
        "request": request.to_dict() | {"response_url": None},
        "job_id": ctx.job_id,
        "action": result.action,
        "target": result.target,
        "account": ctx.account,
        "region": result.region,
        "facts": result.facts,  # facts.identity: the principal that read the target (in a member account, irbot's assumed role)
        "notes": result.notes,
        "protection": {"locked": protection.locked, "mode": protection.mode, "retain_until": protection.retain_until},
        "objects": [
            {"name": o.name, "key": o.key, "size": o.size, "sha256": o.sha256, "version_id": o.version_id, "description": o.description}
            for o in ctx.kept
        ],
    }
    ctx.keep(Artefact("manifest.json", to_json_bytes(manifest), "application/json", "What was collected, by whom, when, with each object's digest"))
    prefix = ctx.evidence_prefix()
    summary = threads.evidence_summary(request, result, ctx.kept, protection, store.bucket, prefix)
    outcome = {"ok": True, "prefix": prefix, "objects": [{"key": o.key, "sha256": o.sha256, "size": o.size} for o in ctx.kept],
               "notes": result.notes}
    return summary, threads.evidence_detail(result, ctx.kept), outcome


def steps_reply(ctx: JobContext, spec: ActionSpec) -> tuple[tuple, tuple, dict]:
    """An action made of steps (or any dry run): the steps in the thread of the request's message, redrawn as they
    finish; the message itself gets the outcome, and for a hunt its worst findings."""
    request = ctx.request
    is_dry_run = bool(request.options.get("dry_run"))
    card = (ctx.connection.get(card_key(request.id)) or b"").decode()
    title = "Dry run, nothing changed" if is_dry_run else "Steps"
    done: list[dict] = []
    detail_ts = ""

    def on_step(step):
        nonlocal detail_ts
        done.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        drawn = threads.detail(f"{title} (running)", done)
        if detail_ts:
            ctx.slack.update(request.channel_id, detail_ts, *drawn)
        elif card:
            detail_ts = ctx.slack.reply(request, *drawn, thread_ts=card) or ""

    progress = ProgressMessage(ctx, card)
    result = run_targets(ctx, spec, dry_run=is_dry_run, steps=StepLog(on_step), on_progress=progress)
    for artefact in result.artefacts:
        ctx.keep(artefact)
    ok = not any(s.outcome is Outcome.FAILED for s in result.steps)
    final = "Dry run, nothing changed" if is_dry_run else ("Done" if ok else "Done, with failures")
    notes = result.notes + [f"Saved {o.name} (sha256 {o.sha256}) to {o.uri}" for o in ctx.kept]
    steps = [s.to_dict() for s in result.steps]
    # The worst few findings are named in the request's message, with their buttons; the others are cards in its thread.
    # Whoever holds a leaked key decides how many resources it makes: a card each for the worst few, a line for the rest.
    worst = [] if is_dry_run else result.findings[:threads.WORST_SHOWN]
    cards_shown = result.findings[len(worst):MAX_FINDING_CARDS]
    if len(result.findings) > len(worst) + len(cards_shown):
        notes.append(_not_shown(result.findings[len(worst) + len(cards_shown):], len(result.findings)))
    summary = threads.steps_summary(request, steps, ctx.region, state=final, notes=len(notes), worst=worst, findings=len(result.findings),
                                    regions=len(result.facts.get("regions") or ()) or None)
    if not is_dry_run:
        for finding in cards_shown:
            ctx.slack.reply(request, *messages.finding_card(request, finding), thread_ts=card)
    outcome = {"ok": ok, "steps": steps, "notes": result.notes, "facts": _plain(result.facts)}
    return summary, threads.detail(title, steps, notes), outcome | ({"detail_ts": detail_ts} if detail_ts else {})


def readiness_reply(ctx: JobContext, spec: ActionSpec) -> tuple[tuple, tuple, dict]:
    """An action that scores readiness: its card (score, failing checks worst first, passing ones counted), every check in
    the thread, the whole result kept as evidence; and the latest score kept for whoever shows it next (the Home tab)."""
    request = ctx.request
    result = run_targets(ctx, spec, dry_run=False, steps=StepLog())
    for artefact in result.artefacts:
        ctx.keep(artefact)
    report = result.facts.get("readiness") or {}
    evidence = ctx.kept[0] if ctx.kept else None
    readiness.save_latest(ctx.connection, report, request=request.id, evidence=evidence.uri if evidence else "")
    ctx.record("readiness", "done", score=report.get("score"), passed=report.get("passed"), total=report.get("total"),
               failed=report.get("failed"))
    outcome = {"ok": True, "notes": result.notes, "facts": _plain({k: v for k, v in report.items() if k != "checks"})}
    return chat_readiness.card(request, report, ctx.region, evidence), chat_readiness.detail(report, ctx.kept), outcome


def analysis_reply(ctx: JobContext, spec: ActionSpec) -> tuple[tuple, tuple, dict]:
    """An action that reads disk images: its card (what was found, worst first), its steps in the thread, the findings
    and the timeline kept as evidence."""
    request = ctx.request
    card = (ctx.connection.get(card_key(request.id)) or b"").decode()
    progress = ProgressMessage(ctx, card)
    result = run_targets(ctx, spec, dry_run=False, steps=StepLog(), on_progress=progress)
    for artefact in result.artefacts:
        ctx.keep(artefact)
    steps = [s.to_dict() for s in result.steps]
    failed = [f"{s['title']}: {s['detail']}" for s in steps if s["outcome"] == "failed"]
    notes = [f"Saved {o.name} (sha256 {o.sha256}) to {o.uri}" for o in ctx.kept]
    outcome = {"ok": not failed, "steps": steps, "notes": result.notes, "facts": _plain(result.facts)}
    return chat_analysis.card(request, result.facts, failed, ctx.kept), threads.detail("Steps", steps, notes), outcome


REPLIES = {Reply.EVIDENCE: evidence_reply, Reply.STEPS: steps_reply, Reply.READINESS: readiness_reply, Reply.ANALYSIS: analysis_reply}
MAX_FINDING_CARDS = 20


def _not_shown(rest: list[dict], total: int) -> str:
    kinds: dict[str, int] = {}
    for finding in rest:
        kinds[str(finding.get("kind"))] = kinds.get(str(finding.get("kind")), 0) + 1
    listed = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items(), key=lambda kv: -kv[1]))
    return (f"{count(len(rest), 'more finding')} ({listed}) {'has' if len(rest) == 1 else 'have'} no card, so whoever made them can't bury the channel: the first "
            f"{MAX_FINDING_CARDS}, the surest and most serious, have one; all {total} are in the saved evidence.")


def _plain(facts: dict) -> dict:
    return json.loads(json.dumps(facts, default=str))


# -- gated commands -----------------------------------------------------------------------


@_with_clean_logs
def prepare_request(request_id: str) -> dict:
    """Work out the dry-run plan of a gated request and post it with Approve / Deny buttons."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    spec = ctx.spec
    try:
        if spec is None:
            raise ActionError(f"/ir {ctx.request.command} is not available yet.")
        plan: list[dict] = []
        for target in ctx.request.targets:
            one = ctx.for_target(target)
            plan.extend(s.to_dict() for s in run_action(one, spec, target, dry_run=True, steps=StepLog()).steps)
        ctx.book.note_account(request_id, ctx.account)
    except ActionError as exc:
        ctx.book.plan_failed(request_id, str(exc), actor=ctx.worker)
        ctx.slack.reply(ctx.request, *messages.failed(ctx.request, str(exc)))
        return {"ok": False, "error": str(exc)}
    # Pending before the card exists: nobody can click a button on a request still being planned.
    decision = ctx.book.plan_ready(request_id, plan, actor=ctx.worker)
    if not decision.ok:
        log.warning("plan not used", state=decision.state)
        return {"ok": False, "state": decision.state}
    ts = ctx.slack.reply(ctx.request, *messages.approval_card(decision.request))
    if ts:
        ctx.book.attach_message(request_id, ts)
        # A click that landed between the post and attach_message could not redraw a card it couldn't find: draw it now.
        now = ctx.book.get(request_id)
        if now is not None and (now.state != decision.state or now.approvals):
            cards.redraw_request(ctx.slack, now)
        if now is not None and not now.steps:  # the plan, step by step, in the card's thread (unless the run began already)
            redraw_detail(ctx, now, "Plan (dry run, nothing changed yet)", now.plan)
    queue(ctx.connection).enqueue_in(timedelta(seconds=ctx.settings.approval_expiry_seconds + 1), "workers.jobs.expire_request", request_id,
                                     job_id=f"expire-{request_id}", result_ttl=3600)
    incident_changed(ctx)
    return {"ok": decision.ok, "state": decision.state}


@_with_clean_logs
def execute_request(request_id: str) -> dict:
    """Run an approved request exactly once, redrawing its card as the steps finish."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": False, "error": "no such request"}
    spec = ctx.spec
    if spec is not None and spec.loses_memory and pending.state == "approved":
        capturing = ctx.connection.get(batches.active_key(ctx.request.targets[0]))
        if capturing:
            # Running now would lose the memory being captured: wait for the capture to end.
            log.info("waiting for a memory capture", capture=capturing.decode())
            queue(ctx.connection).enqueue_in(timedelta(seconds=15), "workers.jobs.execute_request", request_id)
            return {"ok": False, "state": "approved", "waiting_for": capturing.decode()}
    decision = ctx.book.start(request_id, ctx.worker)
    if not decision.ok:
        log.warning("execution refused", reason=decision.reason, state=decision.state)
        cards.redraw_request(ctx.slack, ctx.book.get(request_id))
        return {"ok": False, "state": decision.state, "error": decision.reason}
    try:
        cards.redraw_request(ctx.slack, decision.request)
        if spec is None:
            raise ActionError(f"/ir {ctx.request.command} is not available yet.")
        if spec.fan_out:
            return batches.start(ctx, decision.request, spec)
    except Exception as exc:  # a request that started must end, whatever failed around it
        log.exception("could not start the request")
        ctx.book.finish(request_id, ctx.worker, ok=False, steps=[], note=f"irbot could not start it: {exc if isinstance(exc, ActionError) else type(exc).__name__}")
        if isinstance(exc, ActionError):
            return {"ok": False, "error": str(exc)}
        raise
    return run_started(ctx, request_id, decision.request.approvers)


@_with_clean_logs
def expire_request(request_id: str) -> dict:
    """End a request nobody approved in time."""
    ctx, pending = load(request_id)
    if pending is None:
        return {"ok": False}
    decision = expire_now(ctx, request_id)
    if decision.reason == "not due yet":
        remaining = max(1, int(pending.expires_at - ctx.book.now()) + 1)
        queue(ctx.connection).enqueue_in(timedelta(seconds=remaining), "workers.jobs.expire_request", request_id)
        return {"ok": False, "state": pending.state}
    return {"ok": decision.ok, "state": decision.state}
