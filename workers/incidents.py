"""Incidents: declared with their own channel and a pinned card that keeps itself up to date,
closed with a summary, and written up as a report built from the audit trail.

Everything the card and the report say is read from the audit trail, so they can't disagree
with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from redis import Redis
from slack_sdk.errors import SlackApiError

from workers.audit import AuditTrail
from workers.logs import get_logger

log = get_logger(__name__)

# What a finished command means for its target, on the card.
TARGET_STATES = {"collect": "collected", "isolate": "isolated", "release": "released", "snapshot": "snapshotted",
                 "stop": "stopped", "compromise": "isolated + snapshotted"}
ENDINGS = {"request.approved", "request.denied", "request.cancelled", "request.expired", "request.failed"}


@dataclass
class Incident:
    id: str
    title: str
    severity: str
    commander: str
    channel_id: str = ""
    card_ts: str = ""
    status: str = "open"
    opened_at: str = ""
    closed_at: str = ""
    summary: str = ""
    finding: str = ""


def incident_key(incident_id: str) -> str:
    return f"irbot:incident:{incident_id}"


def channel_key(channel_id: str) -> str:
    return f"irbot:incident-channel:{channel_id}"


class IncidentBook:
    def __init__(self, connection: Redis):
        self.connection = connection

    def new_id(self) -> str:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        number = self.connection.incr(f"irbot:incident-seq:{day}")
        self.connection.expire(f"irbot:incident-seq:{day}", 3 * 24 * 3600)
        return f"IR-{day}-{number:03d}"

    def save(self, incident: Incident) -> None:
        self.connection.hset(incident_key(incident.id), mapping={k: v or "" for k, v in asdict(incident).items()})
        if incident.channel_id:
            self.connection.set(channel_key(incident.channel_id), incident.id)

    def get(self, incident_id: str) -> Incident | None:
        data = {k.decode(): v.decode() for k, v in self.connection.hgetall(incident_key(incident_id)).items()}
        return Incident(**data) if data else None

    def for_channel(self, channel_id: str) -> Incident | None:
        found = self.connection.get(channel_key(channel_id))
        return self.get(found.decode()) if found else None


def channel_name(incident: Incident) -> str:
    """ir-20261123-001-crypto-miner-on-web-1: the ID, then the title's first words (Slack allows 80 characters)."""
    words = re.sub(r"[^a-z0-9]+", " ", incident.title.lower()).split()
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > 40:
            break
        slug = f"{slug}-{word}" if slug else word
    return f"{incident.id.lower()}-{slug}".rstrip("-")


def summarise(records: list[dict]) -> dict:
    """What the card shows, from the incident's audit records."""
    targets: dict[str, list[str]] = {}
    keys_revoked: list[str] = []
    requests: dict[str, dict] = {}
    evidence = 0
    for r in records:
        params = r.get("params", {})
        request = params.get("request")
        if request:
            entry = requests.setdefault(request, {"command": params.get("command"), "target": r.get("target"), "ended": False, "pending": False})
            if r["action"] == "request.pending":
                entry["pending"] = True
            if r["action"] in ENDINGS or r["action"] == "job.finished":
                entry["ended"] = True
        if r["action"] == "evidence.stored":
            evidence += 1
        if r["action"] == "job.finished" and r.get("outcome") in ("ok", "finished"):
            command, target = params.get("command"), r.get("target", "")
            if command == "revoke-key":
                keys_revoked.append(target)
            elif command in TARGET_STATES:
                state = TARGET_STATES[command] + (" + stopped" if command == "compromise" and params.get("options", {}).get("stop") else "")
                targets.setdefault(target, [])
                if state not in targets[target]:
                    targets[target].append(state)
        if r["action"] == "memory.custody" and r.get("outcome") == "complete":
            targets.setdefault(r.get("target", ""), []).append("memory captured")
    waiting = [f"/ir {e['command']} {e['target']}" for e in requests.values() if e["pending"] and not e["ended"]]
    return {"targets": targets, "keys_revoked": keys_revoked, "waiting": waiting, "evidence": evidence}


def redraw_card(client, connection: Redis, incident_id: str) -> None:
    """Draw the incident's pinned card again from the audit trail; never fails the caller."""
    from workers import messages

    book = IncidentBook(connection)
    incident = book.get(incident_id)
    if incident is None or not incident.card_ts:
        return
    audit = AuditTrail(connection)
    text, blocks = messages.incident_card(incident, summarise(audit.for_incident(incident_id)), audit.head())
    try:
        client.chat_update(channel=incident.channel_id, ts=incident.card_ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.error("incident card update failed", slack_error=exc.response.get("error", ""), incident=incident_id)


# -- jobs -------------------------------------------------------------------------------------


def declare_incident(data: dict) -> dict:
    """Create the incident's channel, invite the people, post and pin its card."""
    from workers import jobs, messages

    ctx = jobs.Context(None)
    book = IncidentBook(ctx.connection)
    incident = Incident(id=data["id"], title=data["title"], severity=data.get("severity") or "medium", commander=data["user_id"],
                        opened_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), finding=data.get("finding", ""))
    slack = ctx.slack
    try:
        channel = slack.conversations_create(name=channel_name(incident), is_private=data.get("private", True))["channel"]
        incident.channel_id = channel["id"]
        people = sorted({data["user_id"], *ctx.settings.responders})
        slack.conversations_invite(channel=incident.channel_id, users=",".join(people))
        book.save(incident)
        audit = AuditTrail(ctx.connection)
        audit.append(incident=incident.id, actor=data["user_id"], action="incident.declared", target=incident.id,
                     params={"title": incident.title, "severity": incident.severity, "channel": incident.channel_id,
                             "from_channel": data.get("channel_id"), "finding": incident.finding}, outcome="open")
        text, blocks = messages.incident_card(incident, summarise(audit.for_incident(incident.id)), audit.head())
        incident.card_ts = slack.chat_postMessage(channel=incident.channel_id, text=text, blocks=blocks)["ts"]
        slack.pins_add(channel=incident.channel_id, timestamp=incident.card_ts)
        book.save(incident)
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        log.error("declare failed", slack_error=error)
        if data.get("channel_id"):
            slack.chat_postEphemeral(channel=data["channel_id"], user=data["user_id"],
                                     text=f"irbot could not set up {incident.id}'s channel: Slack said `{error}`.")
        return {"ok": False, "error": error}
    if data.get("channel_id"):
        slack.chat_postMessage(channel=data["channel_id"], text=f"<@{data['user_id']}> declared {incident.id} ({incident.severity}): "
                               f"{messages.escape(incident.title)} — in <#{incident.channel_id}>.")
    return {"ok": True, "incident": incident.id, "channel": incident.channel_id}


def close_incident(data: dict) -> dict:
    from workers import jobs, messages

    ctx = jobs.Context(None)
    book = IncidentBook(ctx.connection)
    incident = book.get(data["incident"])
    if incident is None:
        return {"ok": False}
    incident.status, incident.summary = "closed", data.get("summary", "")
    incident.closed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    book.save(incident)
    AuditTrail(ctx.connection).append(incident=incident.id, actor=data["user_id"], action="incident.closed", target=incident.id,
                                      params={"summary": incident.summary}, outcome="closed")
    redraw_card(ctx.slack, ctx.connection, incident.id)
    ctx.slack.chat_postMessage(channel=incident.channel_id, text=f"<@{data['user_id']}> closed {incident.id}." +
                               (f" Summary: {messages.escape(incident.summary)}" if incident.summary else ""))
    return {"ok": True}


def build_report(data: dict) -> dict:
    """The incident report as Markdown: uploaded to the channel and kept as evidence."""
    from actions.artefacts import Artefact
    from workers import jobs
    from workers.writeup import report_markdown
    from workers.request import CommandRequest

    request = CommandRequest.from_dict(data)
    ctx = jobs.Context(request)
    book = IncidentBook(ctx.connection)
    incident = book.get(request.incident) or Incident(id=request.incident, title=f"channel {request.channel_id}", severity="-", commander="-")
    audit = AuditTrail(ctx.connection)
    body = report_markdown(incident, audit.for_incident(request.incident), audit.head(), audit.sealed_up_to())
    stored_at = ctx.keep(Artefact("report.md", body.encode("utf-8"), "text/markdown; charset=utf-8", f"Incident report of {incident.id}"))
    digest = ctx.kept[-1].sha256
    ctx.slack.files_upload_v2(channel=request.channel_id, content=body, filename=f"{incident.id}-report.md",
                              title=f"{incident.id} incident report", initial_comment=f"Report of {incident.id}: also kept as evidence at {stored_at} (sha256 {digest}).")
    return {"ok": True, "evidence": stored_at, "sha256": digest}
