"""Posting a job's outcome back to the channel it came from."""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from workers.logs import get_logger
from workers.request import CommandRequest
from workers.settings import Settings

log = get_logger(__name__)

# Errors that mean the bot can't post there itself, but the command's response_url still can.
FALL_BACK_TO_RESPONSE_URL = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


def slack_client(settings: Settings) -> WebClient:
    # Slack answers bursts with HTTP 429 and Retry-After: wait as told, and retry.
    client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=5)]
    return client


def post(client: WebClient, request: CommandRequest, text: str, blocks: list[dict]) -> str | None:
    """Post in the request's channel; returns the message ts, or None if only response_url worked."""
    try:
        response = client.chat_postMessage(channel=request.channel_id, text=text, blocks=blocks, unfurl_links=False)
        return response["ts"]
    except SlackApiError as exc:
        error = exc.response.get("error", "")
        if error not in FALL_BACK_TO_RESPONSE_URL or not request.response_url:
            raise
        log.warning("posting through response_url", slack_error=error, channel=request.channel_id)
    WebhookClient(request.response_url).send(text=text, blocks=blocks, response_type="in_channel", replace_original=False)
    return None


def update(client: WebClient, channel: str, ts: str, text: str, blocks: list[dict]) -> None:
    """Redraw a message in place; a failure is logged, never raised (the state lives in Redis)."""
    try:
        client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
    except SlackApiError as exc:
        log.error("message update failed", slack_error=exc.response.get("error", ""), channel=channel)
