"""The Bolt app: verifies Slack's requests, parses /ir, queues the work and acks within 3 s."""

from __future__ import annotations

import json
import re
import uuid

import structlog
from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

import actions
from actions.registry import Risk
from bot import views
from bot.grammar import UsageError, parse
from workers import messages
from workers.approvals import APPROVED, EXPIRED, ApprovalBook, book_from_settings
from rq import Queue

from workers.audit import AuditTrail
from workers.incidents import Incident, IncidentBook, redraw_card, summarise
from workers.queues import ACTIONS_QUEUE, SERIALIZER
from workers.logs import get_logger
from workers.queues import enqueue, enqueue_execution, enqueue_gated
from workers.request import CommandRequest
from workers.settings import Settings

log = get_logger(__name__)

# Commands that are not AWS actions: the bot answers them, or hands them to a worker itself.
BOT_COMMANDS = frozenset({"help", "audit", "status", "declare", "close", "report"})


def available_commands() -> frozenset[str]:
    return BOT_COMMANDS | frozenset(actions.REGISTRY)


def create_app(settings: Settings, connection: Redis, *, client: WebClient | None = None) -> App:
    client = client or WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret,
        # Socket Mode requests come over an authenticated websocket, not signed HTTP.
        request_verification_enabled=not settings.socket_mode,
    )
    book = book_from_settings(settings, connection, client)

    @app.command("/ir")
    def ir(ack, command: dict) -> None:
        ack(**handle_ir(settings, connection, book, command))

    for action_id, verb in (("ir_approve", "approve"), ("ir_deny", "deny"), ("ir_cancel", "cancel")):
        app.action(action_id)(_button(book, connection, client, verb))

    @app.action("ir_declare_finding")
    def declare_from_finding(ack, body: dict) -> None:
        """Declare an incident from a finding card: its title and severity, by whoever clicked."""
        ack()
        action = (body.get("actions") or [{}])[0]
        user_id = body.get("user", {}).get("id", "")
        channel_id = (body.get("channel") or {}).get("id", "")
        try:
            asked = json.loads(action.get("value") or "{}")
        except ValueError:
            return
        if user_id not in settings.responders:
            _tell(client, channel_id, user_id, views.not_a_responder(user_id)["text"])
            return
        new_id = IncidentBook(connection).new_id()
        Queue(ACTIONS_QUEUE, connection=connection, serializer=SERIALIZER).enqueue(
            "workers.incidents.declare_incident",
            {"id": new_id, "title": str(asked.get("title", "finding"))[:80], "severity": asked.get("severity"), "user_id": user_id,
             "channel_id": channel_id, "finding": asked.get("finding", "")}, job_id=f"declare-{new_id}")

    @app.action(re.compile(r"^ir_request_"))
    def from_card(ack, body: dict) -> None:
        """A button on a finding card: the same request as typing the command, by whoever clicked."""
        ack()
        action = (body.get("actions") or [{}])[0]
        try:
            asked = json.loads(action.get("value") or "{}")
            text = f"{asked['command']} {asked['target']}" + (f" --region {asked['region']}" if asked.get("region") else "")
        except (ValueError, KeyError, TypeError):
            return
        user_id = body.get("user", {}).get("id", "")
        channel_id = (body.get("channel") or {}).get("id", "")
        reply = handle_ir(settings, connection, book, {"user_id": user_id, "channel_id": channel_id, "text": text,
                                                       "team_id": (body.get("team") or {}).get("id", ""),
                                                       "response_url": body.get("response_url", "")})
        if reply.get("response_type") == "in_channel":
            _say(client, channel_id, reply["text"])
        else:
            _tell(client, channel_id, user_id, reply["text"])

    return app


def handle_ir(settings: Settings, connection: Redis, book: ApprovalBook, payload: dict) -> dict:
    """The reply to one /ir; queues the work when the command is valid and allowed."""
    request_id = uuid.uuid4().hex[:12]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    user_id = payload.get("user_id", "")
    channel_id = payload.get("channel_id", "")
    text = payload.get("text") or ""
    words = text.split()

    if words[:1] != ["help"] and user_id not in settings.responders:
        log.warning("refused: not a responder", user=user_id, channel=channel_id)
        _audit_safely(book.audit, incident=channel_id, actor=user_id, action="request.refused", target=text[:100], params={"why": "not a responder"}, outcome="refused")
        return views.not_a_responder(user_id)
    try:
        command = parse(text)
    except UsageError as exc:
        log.info("refused: usage error", user=user_id, reason=str(exc))
        return views.ephemeral(str(exc))
    if command.name == "help":
        gated = {name for name, spec in actions.REGISTRY.items() if spec.risk is Risk.CHANGE}
        return views.help_reply(available_commands(), gated)
    if command.name not in available_commands():
        return views.not_available(command)
    incidents = IncidentBook(connection)
    try:
        declared = incidents.for_channel(channel_id)
    except RedisError:
        return views.queue_unavailable()
    incident_id = declared.id if declared else channel_id
    if command.name in ("audit", "status", "declare", "close", "report"):
        return _incident_command(command, payload, connection, book, incidents, declared, incident_id, request_id)

    options = dict(command.options)
    if settings.aws_region:
        options.setdefault("region", settings.aws_region)  # so the plan, the card and the audit name it
    request = CommandRequest(
        id=request_id,
        command=command.name,
        targets=command.targets,
        options=options,
        user_id=user_id,
        user_name=payload.get("user_name", ""),
        channel_id=channel_id,
        channel_name=payload.get("channel_name", ""),
        team_id=payload.get("team_id", ""),
        response_url=payload.get("response_url", ""),
        incident=incident_id,
    )
    gated = actions.get(command.name).risk is Risk.CHANGE and not command.options.get("dry_run")
    try:
        if gated:
            decision = book.open(request)
            if not decision.ok:
                return views.ephemeral(decision.reason)
            job_id = enqueue_gated(connection, request.id)
        else:
            book.audit.append(incident=request.incident, actor=user_id, action="request.queued", target=" ".join(request.targets),
                              params={"request": request.id, "command": request.command, "options": request.options}, outcome="queued")
            job_id = enqueue(connection, request)
    except RedisError as exc:
        log.error("queue unreachable", error=type(exc).__name__)
        return views.queue_unavailable()
    log.info("queued", job_id=job_id, command=command.name, targets=list(command.targets), user=user_id, gated=gated)
    return views.awaiting_approval(command, user_id, request.id) if gated else views.queued(command, user_id, request.id)


def _incident_command(command, payload, connection, book, incidents, declared, incident_id, request_id) -> dict:
    """declare, status, close, report and audit: about the incident this channel is."""
    user_id, channel_id = payload.get("user_id", ""), payload.get("channel_id", "")
    queue = Queue(ACTIONS_QUEUE, connection=connection, serializer=SERIALIZER)
    try:
        if command.name == "audit":
            return _audit_reply(book.audit, incident_id)
        if command.name == "status":
            subject = declared or Incident(id=incident_id, title=f"incident of this channel ({incident_id})", severity="-", commander=user_id)
            text, _ = messages.incident_card(subject, summarise(book.audit.for_incident(incident_id)), book.audit.head())
            return {"response_type": "in_channel", "text": text}
        if command.name == "declare":
            new_id = incidents.new_id()
            queue.enqueue("workers.incidents.declare_incident", {"id": new_id, "title": command.targets[0], "severity": command.options.get("severity"),
                                                                  "user_id": user_id, "channel_id": channel_id}, job_id=f"declare-{new_id}")
            return {"response_type": "in_channel",
                    "text": f"<@{user_id}> is declaring {new_id}: {messages.escape(command.targets[0])}. Its channel follows."}
        if declared is None:
            return views.ephemeral(f"This channel is not a declared incident's channel, so there is nothing to {command.name} here. "
                                   "`/ir declare <title>` makes one.")
        if command.name == "close":
            if declared.status == "closed":
                return views.ephemeral(f"{declared.id} is closed already.")
            queue.enqueue("workers.incidents.close_incident", {"incident": declared.id, "user_id": user_id, "summary": command.options.get("summary", "")})
            return {"response_type": "in_channel", "text": f"<@{user_id}> is closing {declared.id}."}
        request = CommandRequest(id=request_id, command="report", targets=(), options={}, user_id=user_id, channel_id=channel_id,
                                 incident=declared.id, response_url=payload.get("response_url", ""))
        queue.enqueue("workers.incidents.build_report", request.to_dict(), job_id=f"report-{request_id}")
        return {"response_type": "in_channel", "text": f"<@{user_id}> asked for {declared.id}'s report; it will be uploaded here."}
    except RedisError:
        return views.queue_unavailable()


def _audit_reply(audit: AuditTrail, incident: str) -> dict:
    try:
        records = audit.for_incident(incident)
        text = messages.audit_trail(incident, records, audit.head(), audit.sealed_up_to())
    except RedisError:
        return views.queue_unavailable()
    return {"response_type": "in_channel", "text": text}


def _audit_safely(audit: AuditTrail, **record) -> None:
    try:
        audit.append(**record)
    except RedisError as exc:
        log.error("audit unreachable", error=type(exc).__name__)


def _button(book: ApprovalBook, connection: Redis, client: WebClient, verb: str):
    """A listener for Approve, Deny or Cancel. Acks at once; the approval book decides."""

    def listener(ack, body: dict) -> None:
        ack()
        user_id = body.get("user", {}).get("id", "")
        channel_id = (body.get("channel") or {}).get("id", "")
        request_id = (body.get("actions") or [{}])[0].get("value", "")
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            decision = getattr(book, verb)(request_id, user_id)
        except RedisError as exc:
            log.error("approval book unreachable", error=type(exc).__name__)
            _tell(client, channel_id, user_id, "irbot could not reach its state store (Redis); nothing was decided. Try again in a moment.")
            return
        log.info("button", verb=verb, user=user_id, ok=decision.ok, state=decision.state)
        if not decision.ok:
            _tell(client, channel_id, user_id, decision.reason)
            if decision.request is not None and decision.request.state == EXPIRED:
                _redraw(client, decision.request)  # it turned out to have expired: show it
            return
        _redraw(client, decision.request)
        if decision.state == APPROVED:
            try:
                enqueue_execution(connection, request_id)
            except RedisError as exc:
                log.error("approved but not queued", error=type(exc).__name__)
                _tell(client, channel_id, user_id, f"Request {request_id} is approved, but irbot could not queue it (Redis). "
                      "Tell whoever runs irbot; the request is recorded as approved.")
        if decision.request.request.incident.startswith("IR-"):
            redraw_card(client, connection, decision.request.request.incident)

    listener.__name__ = f"on_{verb}"
    return listener


def _say(client: WebClient, channel_id: str, text: str) -> None:
    try:
        client.chat_postMessage(channel=channel_id, text=text)
    except SlackApiError as exc:
        log.error("channel reply failed", slack_error=exc.response.get("error", ""))


def _tell(client: WebClient, channel_id: str, user_id: str, text: str) -> None:
    try:
        client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)
    except SlackApiError as exc:
        log.error("ephemeral reply failed", slack_error=exc.response.get("error", ""))


def _redraw(client: WebClient, pending) -> None:
    if not pending.message_ts:
        return
    text, blocks = messages.approval_card(pending)
    try:
        client.chat_update(channel=pending.request.channel_id, ts=pending.message_ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.error("card update failed", slack_error=exc.response.get("error", ""))
