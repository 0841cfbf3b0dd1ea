"""Help where people look: `/ir` alone opens the command form (views.open with the trigger ID), the form runs a command
exactly as typed, `/ir help <command>` explains one, and a refusal shows the user ID as text."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from tests.helpers import CHANNEL, OUTSIDER, RESPONDER, signed_headers, slash_command


def submission(user: str, command: str | None, args: str | None, *, channel: str = CHANNEL) -> str:
    """A view_submission of the command form, as Slack sends it."""
    values = {"command": {"command": {"type": "static_select",
                                      "selected_option": {"text": {"type": "plain_text", "text": command}, "value": command} if command else None}},
              "args": {"args": {"type": "plain_text_input", "value": args}}}
    payload = {"type": "view_submission", "team": {"id": "T0IRBOT", "domain": "irbot-test"},
               "user": {"id": user, "username": user.lower(), "team_id": "T0IRBOT"}, "api_app_id": "A0IRBOT",
               "token": "deprecated-verification-token", "trigger_id": "9876.5432.dcba",
               "view": {"id": "V0FORM", "type": "modal", "callback_id": "ir_command", "private_metadata": json.dumps({"channel_id": channel}),
                        "state": {"values": values}, "hash": str(time.time())}}
    return urlencode({"payload": json.dumps(payload)})


def submit(irbot, user: str, command: str | None, args: str | None = None):
    body = submission(user, command, args)
    status, reply, elapsed = irbot.post(body, signed_headers(body))
    assert status == 200 and elapsed < 3
    return reply


def test_ir_alone_opens_the_command_form_with_the_trigger_id(run_irbot, slack, redis_conn):
    irbot = run_irbot()
    status, reply, elapsed = irbot.command("")
    assert status == 200 and elapsed < 3 and not reply  # nothing posted: the form is the answer
    [opened] = slack.calls_to("views.open")
    assert opened.params["trigger_id"] == "1234.5678.abcd"
    view = opened.params["view"]
    assert view["type"] == "modal" and view["callback_id"] == "ir_command" and json.loads(view["private_metadata"]) == {"channel_id": CHANNEL}
    select = next(b["element"] for b in view["blocks"] if b.get("block_id") == "command")
    assert select["type"] == "static_select"
    assert {"collect", "isolate", "hunt-key", "declare", "help"} <= {o["value"] for o in select["options"]}
    assert next(b for b in view["blocks"] if b.get("block_id") == "args")["element"]["type"] == "plain_text_input"


def test_without_a_trigger_id_ir_alone_says_what_to_type(run_irbot, slack, redis_conn):
    irbot = run_irbot()
    body = slash_command("").replace("trigger_id=1234.5678.abcd", "trigger_id=")
    status, reply, _ = irbot.post(body, signed_headers(body))
    assert status == 200 and reply["response_type"] == "ephemeral" and "Tell irbot what to do" in reply["text"]
    assert not slack.calls_to("views.open")


def test_a_submitted_form_runs_the_command_as_if_typed(run_irbot, world, slack):
    irbot = run_irbot()
    reply = submit(irbot, RESPONDER, "collect", world["instance"])
    assert not reply  # the form closes
    # the asker is told privately, as when typed; the channel gets the request's own message
    said = slack.wait_for(lambda s: [t for t in s.ephemerals(RESPONDER) if "as request" in t])
    assert f"Queued `/ir collect {world['instance']}`" in said[0]
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.top_level(CHANNEL)))


def test_a_mistake_in_the_form_is_shown_in_the_form_and_nothing_runs(run_irbot, world, slack, redis_conn):
    irbot = run_irbot()
    reply = submit(irbot, RESPONDER, "collect", "i-12345")
    assert reply["response_action"] == "errors" and "`i-12345` is not an EC2 instance ID" in reply["errors"]["args"]
    reply = submit(irbot, RESPONDER, "collect", None)
    assert reply["response_action"] == "errors" and "`/ir collect` needs an instance-id" in reply["errors"]["args"]
    irbot.settle()
    assert not [m for m in slack.messages(CHANNEL) if "queued" in m["text"]]


def test_the_form_keeps_the_responder_list(run_irbot, world, slack):
    irbot = run_irbot()
    reply = submit(irbot, OUTSIDER, "collect", world["instance"])
    assert reply["response_action"] == "errors"
    assert f"You (user ID {OUTSIDER}) are not on irbot's responder list" in reply["errors"]["args"]
    irbot.settle()
    assert not slack.messages(CHANNEL)


def test_help_on_one_command_gives_its_usage_options_and_an_example(run_irbot, slack, redis_conn):
    irbot = run_irbot()
    status, reply, _ = irbot.command("help isolate")
    text = reply["text"]
    assert reply["response_type"] == "ephemeral"
    assert "*`/ir isolate`* — quarantine an instance" in text
    assert "Usage: `/ir isolate <instance-id> [--region R] [--account ACCOUNT] [--dry-run]`" in text
    assert "needs approval by a second person" in text and "• `--dry-run` — work out and show the plan" in text
    assert "Example: `/ir isolate i-0123456789abcdef0`" in text
    reply = irbot.command("help declare", user=OUTSIDER)[1]  # help is for anyone
    assert "Example: `/ir declare Crypto miner on web-1 --severity high`" in reply["text"]
    reply = irbot.command("help colect")[1]
    assert "`colect` is not an /ir command. Did you mean `/ir help collect`?" in reply["text"]


def test_every_command_has_its_help():
    from bot.grammar import SPECS, explain, parse

    for name, spec in SPECS.items():
        text = explain(name)
        assert text.startswith(f"*`/ir {name}`*") and "Example: `" in text
        parse(text.rsplit("Example: `", 1)[1].rstrip("`").removeprefix("/ir "))  # the example parses


def test_a_refusal_shows_the_user_id_as_text_not_as_a_mention(run_irbot, world, slack):
    irbot = run_irbot()
    reply = irbot.command(f"collect {world['instance']}", user=OUTSIDER)[1]
    assert reply["text"].startswith(f"You (user ID {OUTSIDER}) are not on irbot's responder list")
    assert "<@" not in reply["text"] and f"add {OUTSIDER}." in reply["text"]
