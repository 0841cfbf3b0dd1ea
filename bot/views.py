"""The bot's own replies: acknowledgements, refusals, help."""

from __future__ import annotations

import json

import actions
from bot.grammar import SPECS, Command, explain, help_text
from chat.messages import escape, headline
from core.request import asked_scope


STATE_UNAVAILABLE = "irbot could not reach its state store (Redis); nothing was decided. Try again in a moment."
NO_WORKER = ("Queued; no worker is running right now, so nothing will happen until one starts "
             "(whoever runs irbot: start `irbot worker`).")


def ephemeral(text: str) -> dict:
    return {"response_type": "ephemeral", "text": text}


def help_reply(available, gated, command: str | None = None) -> dict:
    """The list of commands, or, for `/ir help <command>`, that command explained."""
    return ephemeral(explain(command, gated) if command else help_text(available, gated))


MODAL_CALLBACK = "ir_command"  # the view_submission of the command form comes back under this callback ID


def command_form(channel_id: str, available) -> dict:
    """The Block Kit modal `/ir` alone opens: pick a command, give its target and options. Submitting it runs the
    command exactly as typed (the channel it was opened in rides along in private_metadata)."""
    options = [{"text": {"type": "plain_text", "text": spec.name},
                "description": {"type": "plain_text", "text": (spec.summary[:1].upper() + spec.summary[1:])[:75]},
                "value": spec.name}
               for spec in SPECS.values() if spec.name in available]
    return {
        "type": "modal",
        "callback_id": MODAL_CALLBACK,
        "private_metadata": json.dumps({"channel_id": channel_id}),
        "title": {"type": "plain_text", "text": "irbot"},
        "submit": {"type": "plain_text", "text": "Run"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "Pick a command and fill in what it acts on. It runs as if you had "
                                                                   "typed it, with the same checks. `/ir help <command>` explains one."}},
            {"type": "input", "block_id": "command", "label": {"type": "plain_text", "text": "Command"},
             "element": {"type": "static_select", "action_id": "command", "options": options[:100],
                         "placeholder": {"type": "plain_text", "text": "collect, isolate, snapshot…"}}},
            {"type": "input", "block_id": "args", "optional": True, "label": {"type": "plain_text", "text": "Target and options"},
             "element": {"type": "plain_text_input", "action_id": "args", "max_length": 1000,
                         "placeholder": {"type": "plain_text", "text": "e.g. i-0123456789abcdef0 --region eu-west-1"}},
             "hint": {"type": "plain_text", "text": "An instance ID, an access key ID, user@host for memory, or an incident's title; then any options."}},
        ],
    }


def form_errors(text: str) -> dict:
    """A sentence shown under the form's target field, the form left open to mend."""
    return {"response_action": "errors", "errors": {"args": text[:2000]}}


def queued(command: Command, user_id: str, request_id: str) -> dict:
    """Only the asker sees this: the channel gets the request's own message (who asked, what, where it stands)."""
    region = (" " + escape(asked_scope(command.name, command.targets, command.options | {"account": None}, command.options["region"]))
              if command.options.get("region") else "")
    return ephemeral(f"Queued {headline(command.name, command.targets, command.options)}{region} as request `{request_id}`; "
                     "its message follows in the channel, the detail in that message's thread.")


def awaiting_approval(command: Command, user_id: str, request_id: str) -> dict:
    """Only the asker sees this: the channel gets the request's card, with the buttons."""
    return ephemeral(
        f"{headline(command.name, command.targets, command.options)} "
        f"{'runs code on a host' if actions.get(command.name).target == 'memory-target' else 'changes AWS'}, "
        f"so it needs approval by someone else: its card with the Approve / Deny buttons follows in the channel (request `{request_id}`), "
        "the plan in the card's thread.")


def not_available(command: Command) -> dict:
    return ephemeral(f"`/ir {command.name}` is not available yet. `/ir help` shows what is.")


def not_a_responder(user_id: str) -> dict:
    # The ID as text, not a mention: a mention shows a name, and the ID is what the person must pass on.
    shown = escape(user_id)
    return ephemeral(
        f"You (user ID {shown}) are not on irbot's responder list (IR_RESPONDERS), so irbot will not run this for you. "
        f"Ask whoever runs irbot to add {shown}."
    )


def queue_unavailable() -> dict:
    return ephemeral("irbot could not reach its job queue (Redis), so nothing was run. Try again in a moment; if it persists, tell whoever runs irbot.")
