"""Incident jobs: declare (its own channel, the responders and approvers invited, a pinned card), close, and the report."""

from __future__ import annotations

from datetime import datetime, timezone

from slack_sdk.errors import SlackApiError

from actions.artefacts import Artefact
from chat import cards, messages
from chat.directory import People
from chat.outbox import PLACEHOLDER
from chat.writeup import report_markdown
from core.approvals import PENDING, PLANNING
from core.audit import AuditTrail
from core.incidents import SEVERITIES, Incident, IncidentBook, channel_name, summarise
from core.logs import get_logger
from core.request import CommandRequest
from workers.context import JobContext, runtime

log = get_logger(__name__)


def declare_incident(data: dict) -> dict:
    """Create the incident's channel, invite the people, post and pin its card."""
    rt = runtime()
    book = IncidentBook(rt.connection)
    incident = Incident(id=data["id"], title=data["title"], severity=data.get("severity") or "medium", commander=data["user_id"],
                        opened_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), finding=data.get("finding", ""))
    slack = rt.slack
    try:
        # Everyone who may act or approve: an approver who can't see the private channel can't click Approve.
        people = sorted({data["user_id"], *rt.book.responders_now(), *rt.book.approvers_now()})
        incident.channel_id = slack.open_channel(channel_name(incident), people, private=data.get("private", True))
        book.save(incident)
        audit = rt.audit
        # The work already done where it was declared goes with it: named in its first record (AuditTrail.for_incident).
        adopt = data.get("adopt") if data.get("adopt") and audit.for_incident(data["adopt"]) else None
        audit.append(incident=incident.id, actor=data["user_id"], action="incident.declared", target=incident.id,
                     params={"title": incident.title, "severity": incident.severity, "channel": incident.channel_id,
                             "from_channel": data.get("channel_id"), "finding": incident.finding,
                             **({"adopted": adopt} if adopt else {})}, outcome="open")
        text, blocks = messages.incident_card(incident, summarise(audit.for_incident(incident.id)), audit.head())
        incident.card_ts = slack.post(incident.channel_id, text, blocks)
        if not incident.card_ts.startswith(PLACEHOLDER):  # a card waiting in the outbox is pinned by hand, later
            slack.pin(incident.channel_id, incident.card_ts)
        book.save(incident)
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        log.error("declare failed", slack_error=error)
        if data.get("channel_id"):
            slack.tell(data["channel_id"], data["user_id"], f"irbot could not set up {incident.id}'s channel: Slack said `{error}`.")
        return {"ok": False, "error": error}
    if data.get("channel_id"):
        adopted = " The work done here so far belongs to it." if adopt else ""
        rt.slack.post(data["channel_id"], f"<@{data['user_id']}> declared {incident.id} ({incident.severity}): "
                      f"{messages.escape(incident.title)} — in <#{incident.channel_id}>.{adopted}")
    return {"ok": True, "incident": incident.id, "channel": incident.channel_id}


def close_incident(data: dict) -> dict:
    rt = runtime()
    book = IncidentBook(rt.connection)
    incident = book.get(data["incident"])
    if incident is None:
        return {"ok": False}
    incident.status, incident.summary = "closed", data.get("summary", "")
    incident.closed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    book.save(incident)  # first: from here on the bot refuses new work in it
    rt.audit.append(incident=incident.id, actor=data["user_id"], action="incident.closed", target=incident.id,
                    params={"summary": incident.summary}, outcome="closed")
    cancelled, running = _end_waiting_requests(rt, incident, data["user_id"])
    cards.redraw_incident(rt.slack, rt.connection, incident.id)
    said = [f"<@{data['user_id']}> closed {incident.id}."]
    if incident.summary:
        said.append(f"Summary: {messages.escape(incident.summary)}")
    if cancelled:
        said.append(f"Cancelled {_requests(cancelled)} still waiting for approval, so nothing can be approved into a closed incident: "
                    + ", ".join(cancelled) + ".")
    if running:
        said.append(f"Approved already and left to finish: {', '.join(running)}.")
    rt.slack.post(incident.channel_id, " ".join(said))
    _final_report(incident, data["user_id"])
    return {"ok": True, "cancelled": len(cancelled)}


def _end_waiting_requests(rt, incident: Incident, user_id: str) -> tuple[list[str], list[str]]:
    """Cancel the incident's requests still being planned or waiting for approval (recorded, their cards redrawn);
    name those approved or running, which go on. Its requests are those its records name, adopted ones included."""
    mine = {r.get("params", {}).get("request") for r in rt.audit.for_incident(incident.id)} - {None}
    cancelled, running = [], []
    for pending in rt.book.open_requests():
        if pending.id not in mine:
            continue
        what = f"`{messages.escape(messages.command_line(pending.request.command, pending.request.targets, pending.request.options))}` (request {pending.id})"
        if pending.state in (PLANNING, PENDING):
            decision = rt.book.withdraw(pending.id, user_id, f"Cancelled because {incident.id} was closed.")
            if decision.ok:
                cancelled.append(what)
                try:  # a card Slack can't redraw now is redrawn by the outbox; the close goes on either way
                    cards.redraw_request(rt.slack, decision.request, post_if_missing=False)
                except SlackApiError as exc:
                    log.error("cancelled request's card not redrawn", request_id=pending.id, slack_error=exc.response.get("error", ""))
                continue
        current = rt.book.get(pending.id)
        if current is not None and current.state in ("approved", "running"):
            running.append(what)  # what went its own way meanwhile (denied, expired) is not said to go on
    return cancelled, running


def _requests(names: list) -> str:
    return "1 request" if len(names) == 1 else f"{len(names)} requests"


def _changed(rt, incident: Incident, user_id: str, action: str, params: dict, said: str) -> dict:
    """One change to an incident: saved, recorded, its card redrawn, and said in its channel."""
    IncidentBook(rt.connection).save(incident)
    rt.audit.append(incident=incident.id, actor=user_id, action=action, target=incident.id, params=params, outcome=incident.status)
    cards.redraw_incident(rt.slack, rt.connection, incident.id)
    rt.slack.post(incident.channel_id, said)
    return {"ok": True}


def _incident_of(data: dict):
    """The runtime and the incident a change job names (None when it is gone)."""
    rt = runtime()
    return rt, IncidentBook(rt.connection).get(data["incident"])


def reopen_incident(data: dict) -> dict:
    rt, incident = _incident_of(data)
    if incident is None or incident.status != "closed":
        return {"ok": False}
    incident.status, incident.closed_at = "open", ""
    return _changed(rt, incident, data["user_id"], "incident.reopened", {},
                    f"<@{data['user_id']}> reopened {incident.id}: it takes new work again.")


def set_commander(data: dict) -> dict:
    rt, incident = _incident_of(data)
    if incident is None:
        return {"ok": False}
    before, incident.commander = incident.commander, data["value"]
    return _changed(rt, incident, data["user_id"], "incident.commander", {"from": before, "to": incident.commander},
                    f"<@{data['user_id']}> made <@{incident.commander}> the commander of {incident.id} (was <@{before}>).")


def set_severity(data: dict) -> dict:
    rt, incident = _incident_of(data)
    if incident is None or data["value"] not in SEVERITIES:
        return {"ok": False}
    before, incident.severity = incident.severity, data["value"]
    return _changed(rt, incident, data["user_id"], "incident.severity", {"from": before, "to": incident.severity},
                    f"<@{data['user_id']}> changed {incident.id}'s severity from {messages.escape(before)} to *{incident.severity}*.")


def post_update(data: dict) -> dict:
    """A stakeholder update: in the timeline, in the incident's channel, and in IR_UPDATES_CHANNEL when set."""
    rt, incident = _incident_of(data)
    if incident is None:
        return {"ok": False}
    text = messages.escape(data["value"])
    stakeholders = rt.settings.updates_channel
    rt.slack.post(incident.channel_id, f"*Update on {incident.id}* from <@{data['user_id']}>:\n{text}")
    reached = []  # recorded after the posts: the timeline names only the stakeholder channel that got it
    if stakeholders:
        try:
            rt.slack.post(stakeholders, f"*Update on {incident.id}* ({incident.severity}, {'closed' if incident.status == 'closed' else 'open'}): "
                          f"{messages.escape(incident.title)}\nfrom <@{data['user_id']}>: {text}")
            reached.append(stakeholders)
        except SlackApiError as exc:
            error = exc.response.get("error", "")
            log.error("update not posted to the stakeholder channel", slack_error=error)
            rt.slack.tell(incident.channel_id, data["user_id"], f"Your update is posted here, but not in <#{stakeholders}> "
                          f"(IR_UPDATES_CHANNEL): Slack said `{error}`. Invite irbot there, or tell whoever runs it.")
    rt.audit.append(incident=incident.id, actor=data["user_id"], action="incident.update", target=incident.id,
                    params={"text": data["value"], **({"also_to": reached[0]} if reached else {})}, outcome="posted")
    return {"ok": True}


def _final_report(incident: Incident, user_id: str) -> None:
    """The report as closed, kept and uploaded: the last word on the incident. A failure is logged; the close stands."""
    try:
        keep_report(CommandRequest(command="report", targets=(), options={}, user_id=user_id, channel_id=incident.channel_id,
                                   incident=incident.id), final=True)
    except Exception as exc:  # noqa: BLE001 - `/ir report` builds it again on demand
        log.error("final report not kept", incident=incident.id, error=type(exc).__name__)


def build_report(data: dict) -> dict:
    """The incident report as Markdown: uploaded to the channel and kept as evidence."""
    return keep_report(CommandRequest.from_dict(data))


def keep_report(request: CommandRequest, *, final: bool = False) -> dict:
    """Write the report from the audit trail as it stands, keep it as evidence and upload it; ``final`` at close."""
    ctx = JobContext(request)
    incident = IncidentBook(ctx.connection).get(request.incident) or Incident(id=request.incident, title=f"channel {request.channel_id}",
                                                                              severity="-", commander="-")
    audit: AuditTrail = ctx.audit
    body = report_markdown(incident, audit.for_incident(request.incident), audit.head(), audit.sealed_up_to(), People(ctx.slack.client))
    name = "report-final.md" if final else "report.md"
    stored_at = ctx.keep(Artefact(name, body.encode("utf-8"), "text/markdown; charset=utf-8",
                                  f"{'Final i' if final else 'I'}ncident report of {incident.id}"))
    digest = ctx.kept[-1].sha256
    ctx.slack.upload(request.channel_id, body, f"{incident.id}-{name}", f"{incident.id} {'final ' if final else ''}incident report",
                     f"{'Final report' if final else 'Report'} of {incident.id}: also kept as evidence at {stored_at} (sha256 {digest}).")
    return {"ok": True, "evidence": stored_at, "sha256": digest}
