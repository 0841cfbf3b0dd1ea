"""Cards that redraw themselves from the state in Redis: a request's approval card, an incident's pinned card."""

from __future__ import annotations

from redis import Redis

from chat import messages
from chat.slack import Slack
from core.audit import AuditTrail
from core.incidents import IncidentBook, summarise


def redraw_request(slack: Slack, pending, *, post_if_missing: bool = True) -> None:
    """Draw a gated request's card again in place (or post it, if it has no message yet and ``post_if_missing``)."""
    if pending is None:
        return
    text, blocks = messages.approval_card(pending)
    if pending.message_ts:
        slack.update(pending.request.channel_id, pending.message_ts, text, blocks)
    elif post_if_missing:
        slack.reply(pending.request, text, blocks)


def redraw_incident(slack: Slack, connection: Redis, incident_id: str) -> None:
    """Draw the incident's pinned card again from the audit trail; a failed update is logged, never raised."""
    if not incident_id.startswith("IR-"):
        return
    incident = IncidentBook(connection).get(incident_id)
    if incident is None or not incident.card_ts:
        return
    audit = AuditTrail(connection)
    text, blocks = messages.incident_card(incident, summarise(audit.for_incident(incident_id)), audit.head())
    slack.update(incident.channel_id, incident.card_ts, text, blocks)
