"""Running a declared action inside a job, and ending a gated request: shared by the job entry points
(workers.jobs) and the fan-out batches (workers.batches)."""

from __future__ import annotations


from actions.artefacts import Result
from actions.cloudtrail import CloudTrailEvents, EventSource
from actions.errors import ActionError
from actions.registry import ActionSpec, Need
from actions.steps import Outcome, StepLog
from chat import cards
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


def post_with_seal(ctx: JobContext, text: str, blocks: list[dict], update_ts: str | None = None) -> None:
    line = ctx.seal()
    if line:
        text = f"{text}\n{line}"
        blocks = [*blocks, {"type": "context", "elements": [{"type": "mrkdwn", "text": line}]}][:50]
    if update_ts:
        ctx.slack.update(ctx.request.channel_id, update_ts, text, blocks)
    else:
        ctx.slack.reply(ctx.request, text, blocks)
    incident_changed(ctx)


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
    if seal_line:
        pending.note = "\n".join(p for p in (pending.note, seal_line) if p)
    cards.redraw_request(ctx.slack, pending)
    incident_changed(ctx)


def run_started(ctx: JobContext, request_id: str, approvers, *, resumed: bool = False) -> dict:
    """Run a request the approval book has moved to running, redrawing its card as the steps finish, and end it.
    ``resumed``: a second run after its worker died; every step looks before it acts, so it finishes the first."""
    steps: list[dict] = []

    def on_step(step):
        steps.append(step.to_dict())
        ctx.record("step", step.outcome.value, step=step.name, title=step.title, detail=step.detail)
        current = ctx.book.get(request_id)
        current.steps = steps
        cards.redraw_request(ctx.slack, current)

    try:
        result = run_action(ctx, ctx.spec, ctx.request.targets[0], dry_run=False, steps=StepLog(on_step), approvers=approvers)
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
