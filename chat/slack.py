"""The one Slack adapter: the client, posting, redrawing, private replies and uploads, for bot and workers alike.

Slack's 429 answers are waited out as told (Retry-After); a post the bot can't make in a channel
goes through the command's response_url instead; a redraw that fails is logged, never raised,
because the state it shows lives in Redis.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from core.logs import get_logger
from core.request import CommandRequest
from core.settings import Settings

log = get_logger(__name__)

# Errors that mean the bot can't post there itself, but the command's response_url still can.
FALL_BACK_TO_RESPONSE_URL = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


def slack_client(settings: Settings) -> WebClient:
    # Slack answers bursts with HTTP 429 and Retry-After: wait as told, and retry.
    client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=5)]
    return client


class Slack:
    def __init__(self, client: WebClient):
        self.client = client

    @classmethod
    def from_settings(cls, settings: Settings) -> "Slack":
        return cls(slack_client(settings))

    def post(self, channel: str, text: str, blocks: list[dict] | None = None, *, response_url: str = "") -> str | None:
        """Post in ``channel``; returns the message ts, or None if only ``response_url`` worked. Other failures raise."""
        try:
            response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
            return response["ts"]
        except SlackApiError as exc:
            error = exc.response.get("error", "")
            if error not in FALL_BACK_TO_RESPONSE_URL or not response_url:
                raise
            log.warning("posting through response_url", slack_error=error, channel=channel)
        WebhookClient(response_url).send(text=text, blocks=blocks, response_type="in_channel", replace_original=False)
        return None

    def post_card(self, channel: str, text: str, blocks: list[dict]) -> tuple[str, str]:
        """Post and return (channel ID, ts) as Slack gives them: a card to update later needs the ID, not a name."""
        response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
        return response["channel"], response["ts"]

    def reply(self, request: CommandRequest, text: str, blocks: list[dict] | None = None) -> str | None:
        """Post in the channel a request came from."""
        return self.post(request.channel_id, text, blocks, response_url=request.response_url)

    def update(self, channel: str, ts: str, text: str, blocks: list[dict] | None = None, *, quiet: bool = True) -> None:
        """Redraw a message in place; with ``quiet`` a failure is logged, not raised."""
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            if not quiet:
                raise
            log.error("message update failed", slack_error=exc.response.get("error", ""), channel=channel)

    def say(self, channel: str, text: str) -> None:
        """A line for the whole channel; a failure is logged."""
        try:
            self.client.chat_postMessage(channel=channel, text=text)
        except SlackApiError as exc:
            log.error("channel reply failed", slack_error=exc.response.get("error", ""))

    def tell(self, channel: str, user: str, text: str) -> None:
        """A line only ``user`` sees; a failure is logged."""
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            log.error("ephemeral reply failed", slack_error=exc.response.get("error", ""))

    def open_channel(self, name: str, people: list[str], *, private: bool = True) -> str:
        """Create a channel, invite ``people``; returns its ID. Slack's refusals raise SlackApiError."""
        channel = self.client.conversations_create(name=name, is_private=private)["channel"]["id"]
        self.client.conversations_invite(channel=channel, users=",".join(people))
        return channel

    def pin(self, channel: str, ts: str) -> None:
        self.client.pins_add(channel=channel, timestamp=ts)

    def upload(self, channel: str, content: str, filename: str, title: str, comment: str) -> None:
        self.client.files_upload_v2(channel=channel, content=content, filename=filename, title=title, initial_comment=comment)
