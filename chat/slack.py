"""The one Slack adapter: the client, posting, redrawing, private replies and uploads, for bot and workers alike.

Slack's 429 answers are waited out as told (Retry-After); a post the bot can't make in a channel
goes through the command's response_url instead; a redraw that fails is logged, never raised,
because the state it shows lives in Redis. With an outbox, a post or redraw Slack can't take now
(5xx, a timeout, a refused connection) waits in Redis and is delivered, in order, once it can:
a job never fails because Slack did.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from actions import tally
from chat.outbox import PLACEHOLDER, Outbox
from core.logs import get_logger
from core.request import CommandRequest
from core.settings import Settings

log = get_logger(__name__)

# Errors that mean the bot can't post there itself, but the command's response_url still can.
FALL_BACK_TO_RESPONSE_URL = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
# Slack's own words for "not now".
UNAVAILABLE = frozenset({"service_unavailable", "fatal_error", "internal_error", "request_timeout"})


def unavailable(exc: Exception) -> bool:
    """Slack can't take it now (try later), as opposed to won't (a refusal that trying again won't change)."""
    if isinstance(exc, SlackApiError):
        return getattr(exc.response, "status_code", 200) >= 500 or exc.response.get("error") in UNAVAILABLE
    return isinstance(exc, (OSError, TimeoutError))


def slack_client(settings: Settings) -> WebClient:
    # Slack answers bursts with HTTP 429 and Retry-After: wait as told, and retry.
    client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    client.retry_handlers = [ConnectionErrorRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=5),
                             ServerErrorRetryHandler(max_retry_count=1)]
    return counting_retries(client)


# Why Slack's client tried again, by the handler that decided it: a closed set of label values.
RETRY_REASONS = {ConnectionErrorRetryHandler: "connection_error", RateLimitErrorRetryHandler: "rate_limited",
                 ServerErrorRetryHandler: "server_error"}


class CountedRetries(RetryHandler):
    """One of the client's retry handlers, unchanged, counting each retry it goes ahead with."""

    def __init__(self, handler: RetryHandler):
        super().__init__(handler.max_retry_count, handler.interval_calculator)
        self.handler = handler
        self.reason = RETRY_REASONS.get(type(handler), "other")

    def can_retry(self, **kwargs) -> bool:
        return self.handler.can_retry(**kwargs)

    def prepare_for_next_attempt(self, **kwargs) -> None:
        # slack_sdk calls this only once a handler has decided to retry, right before it waits and tries again.
        tally.count("irbot_slack_retries", reason=self.reason)
        self.handler.prepare_for_next_attempt(**kwargs)


def counting_retries(client: WebClient) -> WebClient:
    """Count the retries of whichever handlers ``client`` has (its own defaults, or slack_client's)."""
    client.retry_handlers = [h if isinstance(h, CountedRetries) else CountedRetries(h) for h in client.retry_handlers]
    return client


class Slack:
    def __init__(self, client: WebClient, outbox: Outbox | None = None, on_queued=None):
        self.client = client
        self.outbox = outbox
        self.on_queued = on_queued  # called when something waits in the outbox: schedules its delivery

    @classmethod
    def from_settings(cls, settings: Settings, outbox: Outbox | None = None, on_queued=None) -> "Slack":
        return cls(slack_client(settings), outbox, on_queued)

    def post(self, channel: str, text: str, blocks: list[dict] | None = None, *, response_url: str = "", thread_ts: str = "") -> str | None:
        """Post in ``channel`` (in the thread of ``thread_ts`` when given); returns the message ts (a placeholder while
        it waits in the outbox), or None if only ``response_url`` worked. A refusal raises."""
        if self._behind_others(thread_ts):
            return self._keep("post", channel, text, blocks, response_url=response_url, thread_ts=thread_ts)
        thread_ts = self.outbox.resolve(thread_ts) if self.outbox else thread_ts
        try:
            return self._post_now(channel, text, blocks, response_url, thread_ts)
        except (SlackApiError, OSError) as exc:
            if self.outbox is None or not unavailable(exc):
                raise
            return self._keep("post", channel, text, blocks, response_url=response_url, thread_ts=thread_ts)

    def _post_now(self, channel: str, text: str, blocks: list[dict] | None, response_url: str, thread_ts: str = "") -> str | None:
        try:
            threaded = {"thread_ts": thread_ts} if thread_ts else {}
            response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False, **threaded)
            return response["ts"]
        except SlackApiError as exc:
            error = exc.response.get("error", "")
            if error not in FALL_BACK_TO_RESPONSE_URL or not response_url:
                raise
            log.warning("posting through response_url", slack_error=error, channel=channel)
        WebhookClient(response_url).send(text=text, blocks=blocks, response_type="in_channel", replace_original=False)
        return None

    def _behind_others(self, ts: str = "") -> bool:
        """Whether a message must wait its turn: others wait already (try them first), or it updates one that waits."""
        if self.outbox is None:
            return False
        if self.outbox.waiting():
            self.deliver_waiting()
        return bool(self.outbox.waiting()) or self.outbox.resolve(ts).startswith(PLACEHOLDER)

    def _keep(self, kind: str, channel: str, text: str, blocks, *, ts: str = "", response_url: str = "", thread_ts: str = "") -> str:
        placeholder = self.outbox.add(kind, channel, text, blocks, ts=ts, response_url=response_url, thread_ts=thread_ts)
        if self.on_queued:
            self.on_queued()
        return placeholder

    def deliver_waiting(self) -> bool:
        """Deliver what waits in the outbox, in order; True when nothing waits any more."""
        if self.outbox is None:
            return True
        try:
            return self.outbox.drain(self._deliver)
        except (SlackApiError, OSError) as exc:
            log.warning("slack still unavailable", error=type(exc).__name__, waiting=self.outbox.waiting())
            return False

    def _deliver(self, entry: dict) -> str | None:
        """One waiting message; raises while Slack can't take it, drops (and logs) what Slack refuses."""
        try:
            if entry["kind"] == "post":
                return self._post_now(entry["channel"], entry["text"], entry["blocks"], entry.get("response_url", ""), entry.get("thread_ts", ""))
            self.client.chat_update(channel=entry["channel"], ts=entry["ts"], text=entry["text"], blocks=entry["blocks"])
            return entry["ts"]
        except SlackApiError as exc:
            if unavailable(exc):
                raise
            log.error("slack refused a waiting message; dropped", kind=entry["kind"], slack_error=exc.response.get("error", ""))
            return None

    def post_card(self, channel: str, text: str, blocks: list[dict]) -> tuple[str, str]:
        """Post and return (channel ID, ts) as Slack gives them: a card to update later needs the ID, not a name."""
        response = self.client.chat_postMessage(channel=channel, text=text, blocks=blocks, unfurl_links=False)
        return response["channel"], response["ts"]

    def reply(self, request: CommandRequest, text: str, blocks: list[dict] | None = None, *, thread_ts: str = "") -> str | None:
        """Post in the channel a request came from; with ``thread_ts``, in that message's thread."""
        return self.post(request.channel_id, text, blocks, response_url=request.response_url, thread_ts=thread_ts or "")

    def update(self, channel: str, ts: str, text: str, blocks: list[dict] | None = None, *, quiet: bool = True) -> None:
        """Redraw a message in place; with ``quiet`` a failure is logged, not raised."""
        if self._behind_others(ts):
            self._keep("update", channel, text, blocks, ts=ts)
            return
        ts = self.outbox.resolve(ts) if self.outbox else ts
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except (SlackApiError, OSError) as exc:
            if self.outbox is not None and unavailable(exc):
                self._keep("update", channel, text, blocks, ts=ts)
                return
            if not quiet:
                raise
            log.error("message update failed", slack_error=exc.response.get("error", "") if isinstance(exc, SlackApiError) else type(exc).__name__,
                      channel=channel)

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

    def publish_home(self, user: str, view: dict) -> None:
        """Show ``view`` as ``user``'s Home tab of irbot; a failure is logged (the next opening draws it again)."""
        try:
            self.client.views_publish(user_id=user, view=view)
        except (SlackApiError, OSError) as exc:
            log.error("home tab not published", slack_error=exc.response.get("error", "") if isinstance(exc, SlackApiError) else type(exc).__name__)

    def open_channel(self, name: str, people: list[str], *, private: bool = True) -> str:
        """Create a channel, invite ``people``; returns its ID. Slack's refusals raise SlackApiError."""
        channel = self.client.conversations_create(name=name, is_private=private)["channel"]["id"]
        for start in range(0, len(people), 1000):  # Slack invites at most 1000 people per call
            # force: one deactivated account in a user group must not keep everyone else out of the room
            self.client.conversations_invite(channel=channel, users=",".join(people[start:start + 1000]), force=True)
        return channel

    def pin(self, channel: str, ts: str) -> None:
        self.client.pins_add(channel=channel, timestamp=ts)

    def upload(self, channel: str, content: str, filename: str, title: str, comment: str) -> None:
        self.client.files_upload_v2(channel=channel, content=content, filename=filename, title=title, initial_comment=comment)
