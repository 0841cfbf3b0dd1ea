"""Incident jobs: declare (its own channel, invited people, a pinned card), close, and the report."""

from __future__ import annotations

from datetime import datetime, timezone

from slack_sdk.errors import SlackApiError

from actions.artefacts import Artefact
from chat import cards, messages
from chat.outbox import PLACEHOLDER
from chat.writeup import report_markdown
from core.audit import AuditTrail
from core.incidents import Incident, IncidentBook, channel_name, summarise
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
        people = sorted({data["user_id"], *rt.settings.responders})
        incident.channel_id = slack.open_channel(channel_name(incident), people, private=data.get("private", True))
        book.save(incident)
        audit = rt.audit
        audit.append(incident=incident.id, actor=data["user_id"], action="incident.declared", target=incident.id,
                     params={"title": incident.title, "severity": incident.severity, "channel": incident.channel_id,
                             "from_channel": data.get("channel_id"), "finding": incident.finding}, outcome="open")
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
        rt.slack.post(data["channel_id"], f"<@{data['user_id']}> declared {incident.id} ({incident.severity}): "
                      f"{messages.escape(incident.title)} — in <#{incident.channel_id}>.")
    return {"ok": True, "incident": incident.id, "channel": incident.channel_id}


def close_incident(data: dict) -> dict:
    rt = runtime()
    book = IncidentBook(rt.connection)
    incident = book.get(data["incident"])
    if incident is None:
        return {"ok": False}
    incident.status, incident.summary = "closed", data.get("summary", "")
    incident.closed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    book.save(incident)
    rt.audit.append(incident=incident.id, actor=data["user_id"], action="incident.closed", target=incident.id,
                    params={"summary": incident.summary}, outcome="closed")
    cards.redraw_incident(rt.slack, rt.connection, incident.id)
    rt.slack.post(incident.channel_id, f"<@{data['user_id']}> closed {incident.id}." +
                  (f" Summary: {messages.escape(incident.summary)}" if incident.summary else ""))
    return {"ok": True}


def build_report(data: dict) -> dict:
    """The incident report as Markdown: uploaded to the channel and kept as evidence."""
    request = CommandRequest.from_dict(data)
    ctx = JobContext(request)
    incident = IncidentBook(ctx.connection).get(request.incident) or Incident(id=request.incident, title=f"channel {request.channel_id}",
                                                                              severity="-", commander="-")
    audit: AuditTrail = ctx.audit
    body = report_markdown(incident, audit.for_incident(request.incident), audit.head(), audit.sealed_up_to())
    stored_at = ctx.keep(Artefact("report.md", body.encode("utf-8"), "text/markdown; charset=utf-8", f"Incident report of {incident.id}"))
    digest = ctx.kept[-1].sha256
    ctx.slack.upload(request.channel_id, body, f"{incident.id}-report.md", f"{incident.id} incident report",
                     f"Report of {incident.id}: also kept as evidence at {stored_at} (sha256 {digest}).")
    return {"ok": True, "evidence": stored_at, "sha256": digest}
