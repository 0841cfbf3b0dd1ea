"""Break glass: irbot from the command line when Slack itself is down.

`irbot run`, `irbot approve` and `irbot requests` go through the same grammar, responder list,
approval book (two people, approvers only), workers, steps and audit trail as Slack's /ir. Every
record they cause says it came from the command line, with the OS user, the host and the reason.
What the workers post waits in the outbox until Slack answers again, so the channel still gets
the whole story.
"""

from __future__ import annotations

import os
import pwd
import socket
import sys
import time
import uuid

from bot.app import submit
from chat.directory import approver_group, responder_group
from chat.slack import slack_client
from core.approvals import ENDED, book_from_settings
from core.audit import trail_for
from core.queues import enqueue_execution
from core.settings import ConfigError, Settings


def _who(args) -> dict:
    reason = (args.reason or "").strip()
    if not reason:
        raise ConfigError("--reason is required: say why Slack can't be used (it is recorded with every record this causes).")
    # The account the process runs as, not $USER, which anyone can set.
    return {"os_user": pwd.getpwuid(os.getuid()).pw_name, "host": socket.gethostname(), "reason": reason[:500], "via": "irbot command line"}


def _book(settings: Settings, connection):
    client = slack_client(settings) if settings.slack_bot_token else None
    return book_from_settings(settings, connection, approver_group(settings, client) if client else None, trail_for(settings, connection),
                              responder_group(settings, client) if client else None)


def _channel(settings: Settings, args) -> str:
    channel = args.channel or settings.alerts_channel
    if not channel:
        raise ConfigError("--channel is required (or IR_ALERTS_CHANNEL): the channel that gets the story once Slack answers again.")
    return channel


def _plain(text: str) -> str:
    """Slack's mrkdwn as plain terminal text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&").replace("`", "")


def run(settings: Settings, connection, args) -> int:
    break_glass = _who(args)
    book = _book(settings, connection)
    if not book.is_responder(args.user):
        print(f"irbot: {args.user} is not on irbot's responder list (IR_RESPONDERS or IR_RESPONDER_GROUP); nothing was run.", file=sys.stderr)
        return 1
    request_id = uuid.uuid4().hex[:12]
    print(request_id)  # first line, for scripts
    reply, request = submit(settings, connection, book, {"user_id": args.user, "channel_id": _channel(settings, args), "text": args.text},
                            request_id, break_glass)
    print(_plain(reply["text"]))
    if request is None:
        return 1 if reply.get("response_type") == "ephemeral" else 0
    if book.get(request_id) is not None:
        print(f"It needs approval by someone else: irbot approve {request_id} --as <approver's Slack user ID> --reason \"...\"")
        return 0
    return _wait_for_command(book, request, args.wait)


def approve(settings: Settings, connection, args) -> int:
    break_glass = _who(args)
    book = _book(settings, connection)
    pending = book.get(args.request_id)
    asked_from = pending.request.break_glass if pending else {}
    if asked_from and (asked_from.get("os_user"), asked_from.get("host")) == (break_glass["os_user"], break_glass["host"]):
        # Slack IDs are only typed here: the same account on the same host asking and approving is one person.
        print("irbot: refused: this request was asked for from this same account on this host; "
              "the two-person rule needs the approval from someone else's.", file=sys.stderr)
        return 1
    decision = book.approve(args.request_id, args.user, break_glass=break_glass)
    if not decision.ok:
        print(f"irbot: refused: {_plain(decision.reason)}", file=sys.stderr)
        return 1
    if decision.state != "approved":
        print(f"Approval counted; request {args.request_id} needs {decision.request.quorum - len(decision.request.approvals)} more.")
        return 0
    enqueue_execution(connection, args.request_id)
    print(f"Approved; request {args.request_id} is queued to run.")
    return _wait_for_request(book, args.request_id, args.wait)


def requests(settings: Settings, connection, args) -> int:
    book = _book(settings, connection)
    open_ones = book.open_requests()
    if not open_ones:
        print("No open requests.")
    for pending in open_ones:
        r = pending.request
        print(f"{r.id}  {pending.state:<9} /ir {r.command} {' '.join(r.targets)}  requested by {r.user_id} at {r.received_at}"
              + (f"  approved by {', '.join(pending.approvers)}" if pending.approvers else ""))
    return 0


def _wait_for_request(book, request_id: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pending = book.get(request_id)
        if pending.state in ENDED:
            for step in pending.steps:
                print(f"  {step.get('outcome')}: {step.get('title')} — {_plain(step.get('detail', ''))}")
            print(f"Request {request_id} {pending.state}." + (f" {_plain(pending.note)}" if pending.note else ""))
            return 0 if pending.state == "finished" else 1
        time.sleep(0.5)
    print(f"Request {request_id} is still {book.get(request_id).state}; `irbot requests` shows it.")
    return 0


def _wait_for_command(book, request, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ended = [r for r in book.audit.for_incident(request.incident) if r["action"] == "job.finished" and r["params"].get("request") == request.id]
        if ended:
            print(f"Request {request.id} ended: {ended[-1]['outcome']}.")
            return 0 if ended[-1]["outcome"] == "ok" else 1
        time.sleep(0.5)
    print(f"Request {request.id} is queued; its result goes to the channel once Slack answers.")
    return 0
