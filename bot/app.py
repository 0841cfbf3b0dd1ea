"""The Bolt app: verifies Slack's requests, parses /ir, queues the work and acks within 3 s."""

from __future__ import annotations

import uuid

import structlog
from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_sdk import WebClient

from bot import views
from bot.grammar import UsageError, parse
from workers.logs import get_logger
from workers.queues import enqueue
from workers.request import CommandRequest
from workers.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings, connection: Redis, *, client: WebClient | None = None) -> App:
    client = client or WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret,
        # Socket Mode requests come over an authenticated websocket, not signed HTTP.
        request_verification_enabled=not settings.socket_mode,
    )

    @app.command("/ir")
    def ir(ack, command: dict) -> None:
        ack(**handle_ir(settings, connection, command))

    return app


def handle_ir(settings: Settings, connection: Redis, payload: dict) -> dict:
    """The reply to one /ir; queues the work when the command is valid and allowed."""
    request_id = uuid.uuid4().hex[:12]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    user_id = payload.get("user_id", "")
    text = payload.get("text") or ""
    words = text.split()

    if words[:1] != ["help"] and user_id not in settings.responders:
        log.warning("refused: not a responder", user=user_id, channel=payload.get("channel_id"))
        return views.not_a_responder(user_id)
    try:
        command = parse(text)
    except UsageError as exc:
        log.info("refused: usage error", user=user_id, reason=str(exc))
        return views.ephemeral(str(exc))
    if command.name == "help":
        return views.help_reply()
    if not command.spec.available:
        return views.not_available(command)

    request = CommandRequest(
        id=request_id,
        command=command.name,
        targets=command.targets,
        options=command.options,
        user_id=user_id,
        user_name=payload.get("user_name", ""),
        channel_id=payload.get("channel_id", ""),
        channel_name=payload.get("channel_name", ""),
        team_id=payload.get("team_id", ""),
        response_url=payload.get("response_url", ""),
        incident=payload.get("channel_id", ""),
    )
    try:
        job_id = enqueue(connection, request)
    except RedisError as exc:
        log.error("queue unreachable", error=type(exc).__name__)
        return views.queue_unavailable()
    log.info("queued", job_id=job_id, command=command.name, targets=list(command.targets), user=user_id)
    return views.queued(command, user_id, request.id)
