"""The Bolt app: verifies Slack's requests, parses /ir, queues the work and acks within 3 s.

What every listener shares is middleware, not repeated code: a fresh log context and a settled ack per
request (``start_request``), the responder check (``responders_only``), and one error handler that turns an
unreachable Redis into a sentence instead of an HTTP 500.
"""

from __future__ import annotations

import contextvars
import json
import re
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import structlog
from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App, BoltResponse
from slack_bolt.context.ack import Ack
from slack_bolt.logger import get_bolt_logger
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_sdk import WebClient

import actions
from actions import tally
from actions.registry import Risk
from bot import form, views
from actions.errors import ActionError
from bot.grammar import SEVERITIES, Command, UsageError, button_command, check_partition, parse
from chat import cards, home, messages
from chat.directory import approver_group, responder_group
from chat.outbox import Outbox
from chat.slack import Slack, counting_retries
from core.accounts import accounts_for
from core.approvals import APPROVED, EXPIRED, ApprovalBook, book_from_settings
from core.audit import AuditTrail, trail_for
from core.incidents import Incident, IncidentBook, summarise
from core.logs import get_logger
from core.queues import (enqueue, enqueue_execution, enqueue_gated, enqueue_incident_job, live_workers, note_waiting_for_a_worker,
                         schedule_outbox_delivery)
from core.request import CommandRequest
from core.settings import Settings

log = get_logger(__name__)

# Commands that are not AWS actions: the bot answers them, or hands them to a worker itself.
BOT_COMMANDS = frozenset({"help", "audit", "status", "declare", "close", "report", "reopen", "commander", "severity", "update"})
INCIDENT_COMMANDS = BOT_COMMANDS - {"help"}


def available_commands() -> frozenset[str]:
    return BOT_COMMANDS | frozenset(actions.REGISTRY)


def count_request(asked: str, outcome: str) -> None:
    """One request, in irbot_requests (bot.metrics). Its command label is a command irbot has, or "unknown":
    never what was typed, which would make a series of every typo."""
    words = asked.split()[:1] if isinstance(asked, str) else []
    tally.count("irbot_requests", command=words[0] if words and words[0] in available_commands() else "unknown", outcome=outcome)


def _field(body: dict, flat: str, nested: str) -> str:
    """A string from a signed but still untrusted body: ``flat`` (slash commands) or ``nested``.id (interactions)."""
    value = body.get(flat) or (body.get(nested) if isinstance(body.get(nested), dict) else {}).get("id", "")
    return value if isinstance(value, str) else ""


def _user(body: dict) -> str:
    return _field(body, "user_id", "user")


def _channel(body: dict) -> str:
    return _field(body, "channel_id", "channel")


def _clicked(body: dict) -> dict:
    """The clicked button's action, or {} when the body has none of the expected shape."""
    clicked = body.get("actions")
    return clicked[0] if isinstance(clicked, list) and clicked and isinstance(clicked[0], dict) else {}


def _asked(body: dict) -> dict:
    """A finding card button's value: the JSON it was drawn with, or {}."""
    try:
        asked = json.loads(_clicked(body).get("value") or "{}")
    except (TypeError, ValueError):
        return {}
    return asked if isinstance(asked, dict) else {}


class ContextCopyingExecutor(ThreadPoolExecutor):
    """Runs listeners with the log context the middleware bound for their request."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


class SettledAck(Ack):
    """An ack that stays given. Bolt clears a listener's ack when the listener fails after acking, and
    then answers Slack 404 although the user was answered: once acked, a request stays acked."""

    @property
    def response(self) -> BoltResponse | None:
        return self.__dict__.get("_response")

    @response.setter
    def response(self, value: BoltResponse | None) -> None:
        if value is not None or self.__dict__.get("_response") is None:
            self.__dict__["_response"] = value


def _json_response(reply: dict) -> BoltResponse:
    return BoltResponse(status=200, body=json.dumps(reply), headers={"content-type": "application/json; charset=utf-8"})


def _without_token_warning(record) -> bool:
    # Bolt reads SLACK_BOT_TOKEN from the environment itself, even when given a client, and then warns on
    # every start that the token will be unused: irbot's client carries that same token, so nothing is lost.
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


def create_app(settings: Settings, connection: Redis, *, client: WebClient | None = None) -> App:
    # The bot redraws cards the workers posted, which may still wait in the outbox: it shares the outbox.
    slack = Slack(counting_retries(client or WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)),
                  Outbox(connection), lambda: schedule_outbox_delivery(connection))
    get_bolt_logger(App).addFilter(_without_token_warning)  # once: a filter already there is not added again
    app = App(
        client=slack.client,
        signing_secret=settings.slack_signing_secret,
        # Socket Mode requests come over an authenticated websocket, not signed HTTP.
        request_verification_enabled=not settings.socket_mode,
        listener_executor=ContextCopyingExecutor(max_workers=10),
    )
    book = book_from_settings(settings, connection, approver_group(settings, slack.client), trail_for(settings, connection),
                              responder_group(settings, slack.client))
    if settings.accounts or settings.default_account:
        # Asked once, now, so no command pays for the first answer within its 3 s.
        threading.Thread(target=_warm_up_accounts, args=(settings,), daemon=True, name="accounts").start()

    @app.use
    def start_request(body: dict, context, next) -> BoltResponse | None:  # noqa: A002 (Bolt's name)
        """Every request starts with a clean log context and its own ID (a button's: the request it is about),
        and an ack that a later failure can't take back."""
        context["ack"] = SettledAck()
        structlog.contextvars.clear_contextvars()
        if "actions" in body and not isinstance(_clicked(body).get("action_id"), str):
            # Signed, but not of the shape Slack sends: answered and ignored, before any listener parses it.
            log.warning("ignored: malformed interaction")
            return BoltResponse(status=200, body="")
        clicked = _clicked(body).get("value")
        context["request_id"] = clicked if isinstance(clicked, str) and re.fullmatch(r"[0-9a-f]{12}", clicked) else uuid.uuid4().hex[:12]
        structlog.contextvars.bind_contextvars(request_id=context["request_id"])
        next()

    def responders_only(body: dict, next) -> BoltResponse | None:  # noqa: A002
        """Only IR_RESPONDERS and IR_RESPONDER_GROUP's members get past; anyone may ask for help (`/ir help`, or `/ir`
        alone: the command form). The refusal is audited, and is the request's answer."""
        user_id, channel_id = _user(body), _channel(body)
        text = body.get("text") if isinstance(body.get("text"), str) else ""
        submitted = body.get("type") == "view_submission"
        if submitted:
            channel_id, text = form.read(body)
        if book.is_responder(user_id) or (("command" in body or submitted) and text.split()[:1] in (["help"], [])):
            next()
            return None
        log.warning("refused: not a responder", user=user_id, channel=channel_id)
        asked = _asked(body)
        what = text if "command" in body or submitted else f"{asked.get('command', '')} {asked.get('target', '')}".strip()
        count_request(what, "refused")
        try:
            book.audit.append(incident=channel_id, actor=user_id, action="request.refused", target=str(what)[:100],
                              params={"why": "not a responder"}, outcome="refused")
        except RedisError as exc:
            log.error("audit unreachable", error=type(exc).__name__)
        refusal = views.not_a_responder(user_id)
        if "command" in body:
            return _json_response(refusal)
        if submitted:
            return _json_response(views.form_errors(refusal["text"]))
        slack.tell(channel_id, user_id, refusal["text"])
        return BoltResponse(status=200, body="")

    @app.error
    def on_error(error: Exception, body: dict, response) -> BoltResponse | None:
        """Redis unreachable: a sentence, HTTP 200, nothing changed. Anything else stays a logged 500."""
        count_request(body.get("text") if "command" in body else str(_asked(body).get("command", "")), "error")
        if not isinstance(error, RedisError):
            log.error("listener failed", error=type(error).__name__)
            return None
        log.error("queue unreachable", error=type(error).__name__)
        if response is None:  # acknowledged already (a button): say it privately
            slack.tell(_channel(body), _user(body), views.STATE_UNAVAILABLE)
            return None
        if body.get("type") == "view_submission":  # the form: the sentence shown in it, which stays open
            return _json_response(views.form_errors(views.STATE_UNAVAILABLE))
        return _json_response(views.queue_unavailable())

    @app.command("/ir", middleware=[responders_only])
    def ir(ack, command: dict, context) -> None:
        if not str(command.get("text") or "").strip() and form.open_form(slack.client, command, available_commands()):
            ack()  # the form says it all
            return
        ack(**handle_ir(settings, connection, book, command, context["request_id"]))

    app.view(views.MODAL_CALLBACK, middleware=[responders_only])(
        form.on_submit(slack, lambda payload, request_id: handle_ir(settings, connection, book, payload, request_id)))

    for action_id, verb in (("ir_approve", "approve"), ("ir_deny", "deny"), ("ir_cancel", "cancel")):
        app.action(action_id)(_button(book, connection, slack, verb))

    @app.event("app_home_opened")
    def home_opened(event: dict) -> None:
        """Someone opened irbot's Home tab (Bolt acked already): drawn at once from what Redis holds."""
        user_id = event.get("user")
        if event.get("tab") == "home" and isinstance(user_id, str) and user_id:
            home.publish_home(slack, connection, book, user_id, refresh=True)

    @app.action("ir_declare_finding", middleware=[responders_only])
    def declare_from_finding(ack, body: dict) -> None:
        """Declare an incident from a finding card: its title and severity, by whoever clicked."""
        ack()
        asked = _asked(body)
        if not asked:
            return
        new_id = IncidentBook(connection).new_id()
        enqueue_incident_job(connection, "declare_incident", {
            "id": new_id, "title": str(asked.get("title", "finding"))[:80], "user_id": _user(body),
            # Shown unescaped on the incident's card, so only a severity irbot knows gets through.
            "severity": asked.get("severity") if asked.get("severity") in SEVERITIES else None,
            "channel_id": _channel(body), "finding": asked.get("finding", "")}, job_id=f"declare-{new_id}")

    @app.action(re.compile(r"^ir_request_"), middleware=[responders_only])
    def from_card(ack, body: dict, context) -> None:
        """A button on a finding card: the same request as typing the command, by whoever clicked.

        The value was drawn from a finding, whose every word an attacker may have chosen (and a card drawn by
        an older irbot may carry anything): the command is built from its checked parts, never from text."""
        ack()
        asked, user_id, channel_id = _asked(body), _user(body), _channel(body)
        name = asked.get("command")
        try:
            if not isinstance(name, str) or name not in messages.CARD_COMMANDS or _clicked(body).get("action_id") != f"ir_request_{name}":
                raise UsageError("This button asks for no command a card offers.")
            command = button_command(name, asked.get("target"), asked.get("region"), asked.get("account"))
        except UsageError as exc:
            log.warning("refused: a card button irbot would not draw", user=user_id)
            slack.tell(channel_id, user_id, f"{exc} Nothing was queued.")
            return
        reply = submit(settings, connection, book, {"user_id": user_id, "channel_id": channel_id,
                                                    "team_id": (body.get("team") or {}).get("id", ""),
                                                    "response_url": body.get("response_url", "")}, uuid.uuid4().hex[:12], command=command)[0]
        if reply.get("response_type") == "in_channel":
            slack.say(channel_id, reply["text"])
        else:
            slack.tell(channel_id, user_id, reply["text"])

    return app


def handle_ir(settings: Settings, connection: Redis, book: ApprovalBook, payload: dict, request_id: str) -> dict:
    """The reply to one /ir from a responder; queues the work when the command is valid and allowed.
    A RedisError goes up to the app's error handler."""
    return submit(settings, connection, book, payload, request_id)[0]


def submit(settings: Settings, connection: Redis, book: ApprovalBook, payload: dict, request_id: str,
           break_glass: dict | None = None, command: Command | None = None) -> tuple[dict, CommandRequest | None]:
    """The reply to one command text (or to a ``command`` a button built), and the request it queued (None when
    it queued none). Slack's /ir, the finding cards' buttons and the break-glass command line all come through here."""
    user_id = payload.get("user_id", "")
    channel_id = payload.get("channel_id", "")
    try:
        command = command or parse(payload.get("text") or "")
        check_partition(command, settings.aws_region)
    except UsageError as exc:
        log.info("refused: usage error", user=user_id, reason=str(exc))
        count_request(payload.get("text") or "", "refused")
        return views.ephemeral(str(exc)), None
    if command.name == "help":
        count_request(command.name, "answered")
        gated = {name for name, spec in actions.REGISTRY.items() if spec.risk is Risk.CHANGE}
        return views.help_reply(available_commands(), gated, command.targets[0] if command.targets else None), None
    if command.name not in available_commands():
        count_request(command.name, "refused")
        return views.not_available(command), None
    incidents = IncidentBook(connection)
    declared = incidents.for_channel(channel_id)
    incident_id = declared.id if declared else channel_id
    if command.name in INCIDENT_COMMANDS:
        reply, outcome = _incident_command(command, payload, connection, book, incidents, declared, incident_id, request_id)
        count_request(command.name, outcome)
        return reply, None

    if declared is not None and declared.status == "closed":
        # Nothing new may run under a closed incident: its report and card say it is over.
        log.info("refused: incident closed", user=user_id, incident=declared.id)
        book.audit.append(incident=declared.id, actor=user_id, action="request.refused", target=" ".join(command.targets)[:100],
                          params={"command": command.name, "why": "incident closed"}, outcome="refused")
        count_request(command.name, "refused")
        return views.ephemeral(f"{declared.id} is closed, so irbot takes no new work in its channel; nothing was queued. "
                               "`/ir reopen` opens it again if there is more to do."), None
    options = dict(command.options)
    if settings.aws_region:
        options.setdefault("region", settings.aws_region)  # so the plan, the card and the audit name it
    refusal = choose_account_in_time(settings, actions.get(command.name), command.targets, options)
    if refusal:
        log.info("refused: account", user=user_id, account=options.get("account"))
        count_request(command.name, "refused")
        return views.ephemeral(refusal), None
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
        break_glass=break_glass or {},
    )
    gated = actions.get(command.name).risk is Risk.CHANGE and not command.options.get("dry_run")
    if gated:
        decision = book.open(request)
        if not decision.ok:
            count_request(command.name, "refused")
            return views.ephemeral(decision.reason), None
        job_id = enqueue_gated(connection, request.id)
    else:
        book.audit.append(incident=request.incident, actor=user_id, action="request.queued", target=" ".join(request.targets),
                          params={"request": request.id, "command": request.command, "options": request.options,
                                  **({"break_glass": request.break_glass} if request.break_glass else {})}, outcome="queued")
        job_id = enqueue(connection, request)
    log.info("queued", job_id=job_id, command=command.name, targets=list(command.targets), user=user_id, gated=gated)
    reply = views.awaiting_approval(command, user_id, request.id) if gated else views.queued(command, user_id, request.id)
    if live_workers(connection) == 0:
        # Said at once, not discovered by waiting: the work is safe in the queue until a worker starts,
        # and the first worker to start tells the channel.
        reply["text"] += " " + views.NO_WORKER
        note_waiting_for_a_worker(connection, request)
    count_request(command.name, "awaiting_approval" if gated else "queued")  # last: a RedisError before here counts as an error
    return reply, request


def _warm_up_accounts(settings: Settings) -> None:
    try:
        accounts_for(settings).own
    except Exception as exc:  # noqa: BLE001 - asked again at the first command that needs it
        log.warning("irbot's own account not known yet", error=type(exc).__name__)


ACCOUNT_ANSWER_SECONDS = 1.0  # of Slack's 3 s: what the bot may spend asking AWS which account a command acts in
_ASKING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="account")


def choose_account_in_time(settings: Settings, spec: actions.ActionSpec, targets: tuple[str, ...], options: dict) -> str | None:
    """choose_account within ACCOUNT_ANSWER_SECONDS. Past that, the request goes on without an account and the
    worker decides it with its own patience, refusing there (before any call in the account) what irbot may not do."""
    asked = dict(options)
    future = _ASKING.submit(choose_account, settings, spec, targets, asked)
    try:
        refusal = future.result(timeout=ACCOUNT_ANSWER_SECONDS)
    except TimeoutError:
        log.warning("account not decided in time: the worker decides it", command=spec.name)
        return None
    options.update(asked)
    return refusal


def choose_account(settings: Settings, spec: actions.ActionSpec, targets: tuple[str, ...], options: dict) -> str | None:
    """Decide the account the command acts in, into ``options["account"]``: --account, else the owner of an
    access key, else IR_DEFAULT_ACCOUNT, else irbot's own. Returns the sentence refusing it instead, when irbot
    may not act there (nothing is queued then)."""
    listed = options.get("accounts")
    if not options.get("account") and not settings.default_account and not listed and (spec.target != "access-key" or not settings.accounts):
        return None  # irbot's own account (or, for a key, the worker asks whose it is): nothing to ask AWS here
    where = accounts_for(settings)
    try:
        if options.get("account"):
            account = options["account"]
        elif spec.target == "access-key" and targets[0].startswith("AKIA"):
            try:
                account = where.owner_of_key(targets[0])
            except ActionError:
                return None  # no quick answer: the worker asks again, with its retries, and refuses it there if need be
        else:
            account = where.default()
        options["account"] = account
        refused = where.refusal(account)
        if not refused and listed and listed != "all":
            refused = next((where.refusal(a) for a in listed.split(",") if where.refusal(a)), None)
        return refused
    except ActionError as exc:
        return f"irbot could not tell which AWS account this acts in: {exc} Give it with `--account ACCOUNT`."


def _incident_command(command, payload, connection, book, incidents, declared, incident_id, request_id) -> tuple[dict, str]:
    """declare, status, close, report and audit: about the incident this channel is. The reply, and what irbot did
    (answered, queued or refused)."""
    user_id, channel_id = payload.get("user_id", ""), payload.get("channel_id", "")
    if command.name == "audit":
        return _audit_reply(book.audit, incident_id, _audience(command)), "answered"
    if command.name == "status":
        if declared is None:
            return views.ephemeral("No incident is declared in this channel, so there is no incident card to show. "
                                   "`/ir declare <title> [--severity high]` declares one: its own channel, with a pinned card "
                                   "(the work done here so far goes with it)."), "answered"
        text, _ = messages.incident_card(declared, summarise(book.audit.for_incident(incident_id)), book.audit.head())
        return {"response_type": _audience(command), "text": text}, "answered"
    if command.name == "declare":
        new_id = incidents.new_id()
        # Work done here before any incident (records keyed by this channel) goes with the incident; an incident's
        # own channel keeps its work.
        adopt = channel_id if declared is None else None
        enqueue_incident_job(connection, "declare_incident", {"id": new_id, "title": command.targets[0], "severity": command.options.get("severity"),
                                                              "user_id": user_id, "channel_id": channel_id, "adopt": adopt}, job_id=f"declare-{new_id}")
        return {"response_type": "in_channel",
                "text": f"<@{user_id}> is declaring {new_id}: {messages.escape(command.targets[0])}. Its channel follows."}, "queued"
    if declared is None:
        return views.ephemeral(f"This channel is not a declared incident's channel, so there is nothing to {command.name} here. "
                               "`/ir declare <title>` makes one."), "refused"
    if command.name == "close":
        if declared.status == "closed":
            return views.ephemeral(f"{declared.id} is closed already."), "refused"
        enqueue_incident_job(connection, "close_incident", {"incident": declared.id, "user_id": user_id, "summary": command.options.get("summary", "")},
                             job_id=f"close-{request_id}")
        return {"response_type": "in_channel", "text": f"<@{user_id}> is closing {declared.id}."}, "queued"
    if command.name in CHANGES:
        return _change_incident(command, connection, declared, user_id, request_id)
    request = CommandRequest(id=request_id, command="report", targets=(), options={}, user_id=user_id, channel_id=channel_id,
                             incident=declared.id, response_url=payload.get("response_url", ""))
    enqueue_incident_job(connection, "build_report", request.to_dict(), job_id=f"report-{request_id}")
    return {"response_type": "in_channel", "text": f"<@{user_id}> asked for {declared.id}'s report; it will be uploaded here."}, "queued"


# The commands that change a declared incident, each one job of workers.incidents.
CHANGES = {"reopen": "reopen_incident", "commander": "set_commander", "severity": "set_severity", "update": "post_update"}


def _change_incident(command: Command, connection: Redis, declared: Incident, user_id: str, request_id: str) -> tuple[dict, str]:
    if command.name == "reopen" and declared.status != "closed":
        return views.ephemeral(f"{declared.id} is open already."), "refused"
    value = command.targets[0] if command.targets else ""
    enqueue_incident_job(connection, CHANGES[command.name], {"incident": declared.id, "user_id": user_id, "value": value},
                         job_id=f"{command.name}-{request_id}")
    said = {"reopen": f"Reopening {declared.id}", "commander": f"Making <@{value}> the commander of {declared.id}",
            "severity": f"Setting {declared.id}'s severity to {value}", "update": f"Posting your update on {declared.id}"}[command.name]
    return views.ephemeral(f"{said}; the channel and the card follow."), "queued"


def _audience(command: Command) -> str:
    """Status and audit answer the asker alone, unless asked to `--share` with the channel."""
    return "in_channel" if command.options.get("share") else "ephemeral"


def _audit_reply(audit: AuditTrail, incident: str, audience: str) -> dict:
    records = audit.for_incident(incident)
    return {"response_type": audience,
            "text": messages.audit_trail(incident, records, audit.head(), audit.sealed_up_to())}


def _button(book: ApprovalBook, connection: Redis, slack: Slack, verb: str):
    """A listener for Approve, Deny or Cancel. Acks at once; the approval book decides."""

    def listener(ack, body: dict) -> None:
        ack()
        user_id, channel_id = _user(body), _channel(body)
        request_id = _clicked(body).get("value")
        request_id = request_id if isinstance(request_id, str) else ""
        decision = getattr(book, verb)(request_id, user_id)
        log.info("button", verb=verb, user=user_id, ok=decision.ok, state=decision.state)
        if not decision.ok:
            slack.tell(channel_id, user_id, decision.reason)
            if decision.request is not None and decision.request.state == EXPIRED:
                cards.redraw_request(slack, decision.request, post_if_missing=False)  # it turned out to have expired: show it
            return
        cards.redraw_request(slack, decision.request, post_if_missing=False)
        if decision.state == APPROVED:
            try:
                enqueue_execution(connection, request_id)
            except RedisError as exc:
                log.error("approved but not queued", error=type(exc).__name__)
                slack.tell(channel_id, user_id, f"Request {request_id} is approved, but irbot could not queue it (Redis). "
                           "Tell whoever runs irbot; the request is recorded as approved.")
        cards.redraw_incident(slack, connection, decision.request.request.incident)

    listener.__name__ = f"on_{verb}"
    return listener
