"""Running a declared action inside a job, and ending a gated request: shared by the job entry points
(workers.jobs) and the fan-out batches (workers.batches)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from actions.artefacts import Result
from actions.cloudtrail import CloudTrailEvents, EventSource
from actions.errors import ActionError
from actions.registry import ActionSpec, Need
from actions.steps import Outcome, Step, StepLog
from chat import cards, threads
from core.logs import get_logger
from workers.context import JobContext, bind_logs, runtime

log = get_logger(__name__)

# moto can't answer CloudTrail LookupEvents: tests swap this for a fake.
EVENT_SOURCE: EventSource = CloudTrailEvents()


def run_action(ctx: JobContext, spec: ActionSpec, target: str, *, dry_run: bool, steps: StepLog, approvers=(), **parts) -> Result:
    """Run ``spec`` on one target with what it declares it needs, in an account irbot may act in."""
    ctx.check_account()
    ctx.request.options.setdefault("account", ctx.account)  # every message and record of the request names it
    options = {k: v for k, v in ctx.request.options.items() if k not in ("region", "account", "dry_run")}  # the context carries these
    if Need.RECORD in spec.needs:
        parts["record"] = ctx.load_state_record(target)
    if Need.EVENTS in spec.needs:
        parts["events"] = EVENT_SOURCE
    return spec.run(ctx.session, target, ctx.region, context=ctx.run_context(approvers, **parts), steps=steps, dry_run=dry_run, **options)


def run_targets(ctx: JobContext, spec: ActionSpec, *, dry_run: bool, steps: StepLog, approvers=(), **parts) -> Result:
    """Run ``spec`` on every target of the request (``spec.parallel_targets`` at once), each with its own evidence
    prefix; one Result holding them all, its artefacts already kept. A target that fails is a failed step: the
    others go on."""
    targets = ctx.request.targets
    if len(targets) <= 1:
        return run_action(ctx, spec, targets[0] if targets else "", dry_run=dry_run, steps=steps, approvers=approvers, **parts)
    merged = Result(spec.name, " ".join(targets), ctx.region)
    lock = threading.Lock()

    def one(target: str) -> None:
        own = ctx.for_target(target)

        def on_step(step) -> None:  # each target's steps join the request's, named for their target
            with lock:
                steps.add(f"{target}:{step.name}", f"{target}: {step.title}", step.outcome, step.detail)

        try:
            result = run_action(own, spec, target, dry_run=dry_run, steps=StepLog(on_step), approvers=approvers, **parts)
            for artefact in result.artefacts:
                own.keep(artefact)
        except ActionError as exc:
            on_step(Step(target, spec.target_title.format(target=target), Outcome.FAILED, str(exc)))
            return
        except Exception:  # one target's crash must not lose what the others did
            log.exception("target crashed", target=target)
            on_step(Step(target, spec.target_title.format(target=target), Outcome.FAILED,
                         f"irbot hit an internal error (request {ctx.request.id}); the worker log has the details."))
            return
        with lock:
            merged.notes.extend(result.notes)
            merged.findings.extend(result.findings)
            merged.facts[target] = result.facts
            ctx.kept.extend(own.kept)

    with ThreadPoolExecutor(max_workers=max(1, min(spec.parallel_targets, len(targets))), thread_name_prefix="target") as pool:
        list(pool.map(one, targets))
    merged.steps = steps.steps
    return merged


def incident_changed(ctx: JobContext) -> None:
    """Redraw the pinned card of the declared incident this request belongs to, if any."""
    cards.redraw_incident(ctx.slack, ctx.connection, ctx.request.incident)


def expire_now(ctx: JobContext, request_id: str):
    """End a request whose approval window has closed, and show it; one not due yet is left as it is."""
    decision = ctx.book.expire(request_id)
    if decision.ok:
        cards.redraw_request(ctx.slack, decision.request)
        incident_changed(ctx)
    return decision


CARD_KEEP_SECONDS = 7 * 24 * 3600


def card_key(request_id: str) -> str:
    """Where a read-only request's top-level message is (its ts), so whoever ends the request redraws that one."""
    return f"irbot:card:{request_id}"


def post_card(ctx: JobContext, text: str, blocks: list[dict]) -> str:
    """Post the request's one top-level message and remember where it is."""
    ts = ctx.slack.reply(ctx.request, text, blocks) or ""
    if ts:
        ctx.connection.set(card_key(ctx.request.id), ts, ex=CARD_KEEP_SECONDS)
    return ts


def conclude(ctx: JobContext, summary: tuple[str, list[dict]], detail: tuple[str, list[dict]] | None = None, *,
             detail_ts: str = "") -> None:
    """End a read-only request in the channel: its top-level message shows the outcome (posted if it has none yet),
    and its detail and the audit seal go in that message's thread (``detail_ts``: the thread message to redraw)."""
    card = (ctx.connection.get(card_key(ctx.request.id)) or b"").decode()
    seal = ctx.seal()
    text, blocks = detail or ("", [])
    if seal:
        text = "\n".join(p for p in (text, seal) if p)
        blocks = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": seal}]}][:50]
    if card:
        ctx.slack.update(ctx.request.channel_id, card, *summary)
    else:
        card = post_card(ctx, *summary)
    # Without a ts (Slack was reached only through the command's response_url) the detail follows unthreaded.
    if text and detail_ts:
        ctx.slack.update(ctx.request.channel_id, detail_ts, text, blocks)
    elif text:
        ctx.slack.reply(ctx.request, text, blocks, thread_ts=card)
    incident_changed(ctx)


def redraw_detail(ctx: JobContext, pending, title: str, steps: list[dict], notes=(), seal: str = "") -> None:
    """Draw a gated request's thread message (its plan, then its steps) again; post it if it has none yet."""
    text, blocks = threads.detail(title, steps, notes, seal)
    if pending.detail_ts:
        ctx.slack.update(pending.request.channel_id, pending.detail_ts, text, blocks)
    elif pending.message_ts:
        ts = ctx.slack.reply(pending.request, text, blocks, thread_ts=pending.message_ts)
        if ts:
            ctx.book.attach_detail(pending.id, ts)
            pending.detail_ts = ts


def load(request_id: str):
    """The JobContext and stored request for ``request_id``; (None, None) if it is unknown."""
    rt = runtime()
    pending = rt.book.get(request_id)
    if pending is None:
        log.error("unknown request", request=request_id)
        return None, None
    bind_logs(pending.request)
    return JobContext(pending.request, rt), pending


def finish(ctx: JobContext, request_id: str, *, ok: bool, steps: list[dict], note: str) -> None:
    """End a running request: its state, its audit record and seal, its card and the incident's."""
    final = ctx.book.finish(request_id, ctx.worker, ok=ok, steps=steps, note=note)
    seal_line = ctx.seal()
    pending = final.request or ctx.book.get(request_id)
    cards.redraw_request(ctx.slack, pending)
    # The steps, the notes and the seal: in the card's thread, never on the card itself.
    redraw_detail(ctx, pending, "Steps" if pending.steps else "Outcome", pending.steps, pending.note.splitlines(), seal_line)
    incident_changed(ctx)


def run_started(ctx: JobContext, request_id: str, approvers, *, resumed: bool = False) -> dict:
    """Run a request the approval book has moved to running, redrawing its card as the steps finish, and end it.
    ``resumed``: a second run after its worker died; every step looks before it acts, so it finishes the first."""
    steps: list[dict] = []

    def on_step(step):
        steps.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        redraw_detail(ctx, ctx.book.get(request_id), "Steps (running)", steps)

    try:
        result = run_targets(ctx, ctx.spec, dry_run=False, steps=StepLog(on_step), approvers=approvers)
        for artefact in result.artefacts:
            ctx.keep(artefact)
        ok = not any(s.outcome is Outcome.FAILED for s in result.steps)
        note = "\n".join(result.notes + [f"Saved {o.name} (sha256 {o.sha256}) to {o.uri}" for o in ctx.kept])
    except ActionError as exc:
        ok, note = False, str(exc)
    except Exception:
        log.exception("job crashed")
        ok, note = False, f"irbot hit an internal error (request {request_id}); the worker log has the details."
    if resumed:
        note = "\n".join(p for p in ("Resumed after the worker running it died: every step was run again, each looking before it acted.", note) if p)
    finish(ctx, request_id, ok=ok, steps=steps, note=note)
    log.info("request finished", ok=ok, steps=len(steps), resumed=resumed)
    return {"ok": ok, "state": ctx.book.get(request_id).state, "steps": steps}
