"""The bot's own replies: acknowledgements, refusals, help."""

from __future__ import annotations

import actions
from bot.grammar import Command, help_text
from chat.messages import escape, headline


STATE_UNAVAILABLE = "irbot could not reach its state store (Redis); nothing was decided. Try again in a moment."
NO_WORKER = ("Queued; no worker is running right now, so nothing will happen until one starts "
             "(whoever runs irbot: start `irbot worker`).")


def ephemeral(text: str) -> dict:
    return {"response_type": "ephemeral", "text": text}


def help_reply(available, gated) -> dict:
    return ephemeral(help_text(available, gated))


def queued(command: Command, user_id: str, request_id: str) -> dict:
    """Seen by the whole channel, so everyone knows what was asked and by whom."""
    region = f" in {escape(command.options['region'])}" if command.options.get("region") else ""
    return {
        "response_type": "in_channel",
        "text": f"<@{user_id}> ran {headline(command.name, command.targets, command.options)}{region}: queued as request `{request_id}`; "
                "results will follow here.",
    }


def awaiting_approval(command: Command, user_id: str, request_id: str) -> dict:
    return {
        "response_type": "in_channel",
        "text": f"<@{user_id}> asked for {headline(command.name, command.targets, command.options)}: it "
        f"{'runs code on a host' if actions.get(command.name).target == 'memory-target' else 'changes AWS'}, "
        "so it needs approval by someone else. "
        f"The plan and the Approve / Deny buttons follow here (request `{request_id}`).",
    }


def not_available(command: Command) -> dict:
    return ephemeral(f"`/ir {command.name}` is not available yet. `/ir help` shows what is.")


def not_a_responder(user_id: str) -> dict:
    return ephemeral(
        f"<@{user_id}>, you are not on irbot's responder list (IR_RESPONDERS), so irbot will not run this for you. "
        "Ask whoever runs irbot to add your Slack user ID."
    )


def queue_unavailable() -> dict:
    return ephemeral("irbot could not reach its job queue (Redis), so nothing was run. Try again in a moment; if it persists, tell whoever runs irbot.")
