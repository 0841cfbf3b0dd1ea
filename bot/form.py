"""The command form: `/ir` alone opens it (views.open with the slash command's trigger_id); submitting it runs the
chosen command exactly as if typed, through the same parser and the same checks."""

from __future__ import annotations

import json
import re
from typing import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import views
from bot.grammar import UsageError, parse
from chat.slack import Slack
from core.logs import get_logger

log = get_logger(__name__)
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")


def open_form(client: WebClient, command: dict, available) -> bool:
    """Open the form for a slash command; False when Slack won't (the reply is then the usage sentence, as before)."""
    trigger = command.get("trigger_id")
    channel = command.get("channel_id")
    if not isinstance(trigger, str) or not trigger or not isinstance(channel, str):
        return False
    try:
        # Before the ack, so within Slack's 3 s (the trigger ID expires then too): a short timeout, no retries.
        quick = WebClient(token=client.token, base_url=client.base_url, timeout=2)
        quick.views_open(trigger_id=trigger, view=views.command_form(channel, available))
        return True
    except (SlackApiError, OSError) as exc:
        log.warning("command form not opened", error=exc.response.get("error", "") if isinstance(exc, SlackApiError) else type(exc).__name__)
        return False


def read(body: dict) -> tuple[str, str]:
    """A submitted form (signed, still untrusted): the channel it was opened in and the command line it makes; "" for
    a part not in the shape irbot drew."""
    view = body.get("view") if isinstance(body.get("view"), dict) else {}
    try:
        channel = json.loads(view.get("private_metadata") or "{}").get("channel_id", "")
    except (AttributeError, TypeError, ValueError):
        channel = ""
    state = view.get("state") if isinstance(view.get("state"), dict) else {}
    values = state.get("values") if isinstance(state.get("values"), dict) else {}
    name = _value(values, "command", "selected_option")
    rest = _value(values, "args", "value")
    text = " ".join(part for part in (name, rest) if part)
    return (channel if isinstance(channel, str) and CHANNEL_ID.fullmatch(channel) else ""), text


def _value(values: dict, block: str, key: str) -> str:
    element = values.get(block, {}).get(block) if isinstance(values.get(block), dict) else None
    found = element.get(key) if isinstance(element, dict) else None
    if isinstance(found, dict):  # a select's selected_option
        found = found.get("value")
    return found if isinstance(found, str) else ""


def on_submit(slack: Slack, handle: Callable[[dict, str], dict]):
    """The view_submission listener. ``handle(payload, request_id)`` answers a command as the typed /ir does. A mistake
    in the command is shown in the form, left open to mend; every other answer goes where the typed command's would."""

    def listener(ack, body: dict, context) -> None:
        channel_id, text = read(body)
        if not channel_id or not text:
            ack(**views.form_errors("irbot can't tell which command or channel this form is for; type the command instead."))
            return
        try:
            parse(text)
        except UsageError as exc:
            ack(**views.form_errors(str(exc)))
            return
        user = body.get("user") if isinstance(body.get("user"), dict) else {}
        payload = {"user_id": user.get("id", ""), "channel_id": channel_id, "text": text,
                   "team_id": (body.get("team") or {}).get("id", "") if isinstance(body.get("team"), dict) else ""}
        reply = handle(payload, context["request_id"])
        ack()
        if reply.get("response_type") == "in_channel":
            slack.say(channel_id, reply["text"])
        else:
            slack.tell(channel_id, payload["user_id"], reply["text"])

    listener.__name__ = "on_form_submitted"
    return listener
