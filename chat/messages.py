"""What the workers say in the channel: plain text for notifications, Block Kit for the channel."""

from __future__ import annotations

import json
import re
import textwrap

import actions
from actions import targets
from actions.words import count, plural
from core.request import CommandRequest, place, scope


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so echoed input can't ping @channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def command_line(name: str, asked: tuple[str, ...], options: dict) -> str:
    """The command as asked, every option but the region included (raw: escape it where it is shown)."""
    spec = actions.get(name)
    words = [f"/ir {name}", *asked]
    for option in spec.options if spec else ():
        value = options.get(option.key)
        if option.every and options.get(option.every) == "all":
            words.append(f"{option.name} all")  # every account or region: said in the command, where one place is not
        elif option.key not in ("region", "account") and value not in (None, False, ""):
            words.append(option.name if option.takes is None else f"{option.name} {value}")
    # region and account are shown apart, by place()
    return " ".join(words)


def consequences(name: str, options: dict) -> str:
    """What the options do, in words (raw): '' when none say anything. Headlines and approval dialogs show it."""
    spec = actions.get(name)
    return "; ".join(option.says.format(value=options[option.key]) for option in (spec.options if spec else ())
                     if option.says and options.get(option.key) not in (None, False, ""))


def headline(name: str, asked: tuple[str, ...], options: dict) -> str:
    """`/ir … --delete` — *and DELETE the key: …*, escaped, for mrkdwn."""
    said = consequences(name, options)
    return f"`{escape(command_line(name, asked, options))}`" + (f" — *{escape(said)}*" if said else "")


def fit(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters for a Slack block (3000 for a section or context, 2000 for a field),
    never through an escape such as &amp;, which would show half of it."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _times(n) -> str:
    return "once" if n == 1 else f"{n} times"


SHORT = 12
_DIGEST = re.compile(r"\b([0-9a-f]{%d})[0-9a-f]{%d}\b" % (SHORT, 64 - SHORT))


def short(digest: str | None) -> str:
    """A sha256 as messages show it: its first 12 hex characters (the full one is in the object's metadata, the
    stored object and the report)."""
    return f"{digest[:SHORT]}…" if digest else "?"


def shorten_digests(text: str) -> str:
    """Every full sha256 in ``text`` cut to its first 12 hex characters (step details and notes carry them)."""
    return _DIGEST.sub(lambda m: f"{m.group(1)}…", text)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def failed(request: CommandRequest, sentence: str) -> tuple[str, list[dict]]:
    target = " ".join(request.targets)
    text = f"/ir {request.command} {escape(target)} failed for <@{request.user_id}>: {escape(sentence)}"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":x: `/ir {request.command} {escape(target)}` failed: {escape(sentence)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"requested by <@{request.user_id}> · request `{request.id}`"}]},
    ]
    return text, blocks


OUTCOME_MARKS = {"done": ":white_check_mark:", "already so": ":ballot_box_with_check:", "skipped": ":fast_forward:", "failed": ":x:", "would do": ":small_blue_diamond:"}
STATE_HEADINGS = {
    "planning": ":hourglass_flowing_sand: Planning",
    "pending": ":lock: Approval needed",
    "approved": ":unlock: Approved",
    "running": ":gear: Running",
    "finished": ":white_check_mark: Done",
    "failed": ":x: Failed",
    "denied": ":no_entry: Denied",
    "cancelled": ":heavy_multiplication_x: Cancelled",
    "expired": ":alarm_clock: Expired",
}


def _when(epoch: float | None) -> str:
    from datetime import datetime, timezone

    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S UTC")


def step_lines(steps: list[dict]) -> list[str]:
    return [
        f"{i}. {OUTCOME_MARKS.get(s['outcome'], '')} {escape(s['title'])} — {s['outcome']}" + (f": {escape(s['detail'])}" if s.get("detail") else "")
        for i, s in enumerate(steps, 1)
    ]


def outcome_counts(steps: list[dict]) -> str:
    """'12 steps: 8 done, 1 already so, 3 skipped' — where a request's steps ended, in one line."""
    counts: dict[str, int] = {}
    for step in steps:
        counts[step["outcome"]] = counts.get(step["outcome"], 0) + 1
    listed = ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    return f"{len(steps)} step{'s' if len(steps) != 1 else ''}: {listed}" if steps else ""


def approval_card(pending) -> tuple[str, list[dict]]:
    """The one top-level message a gated request lives in, drawn for its current state: what is asked, by whom,
    where it stands and how it ended, with Approve / Deny / Cancel while it waits. The plan and the steps are in
    its thread (see chat.threads)."""
    request = pending.request
    command = headline(request.command, request.targets, request.options)
    where = escape(scope(request.command, request.targets, request.options.get("account"), request.region, accounts=request.options.get("accounts")))
    heading = STATE_HEADINGS.get(pending.state, pending.state)
    status = _status_line(pending)
    outcome = _outcome(pending)

    text = "\n".join([f"{heading}: {command} {where}, requested by <@{request.user_id}> (request {pending.id}).",
                      " ".join(p for p in (status, outcome.split("\n", 1)[0]) if p), *outcome.split("\n")[1:]])
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{heading}*: {command} {where}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"requested by <@{request.user_id}> · incident `{escape(request.incident or request.channel_id)}` · request `{pending.id}`"
            f" · expires <!date^{int(pending.expires_at)}^{{time}}|{_when(pending.expires_at)}>")}]},
    ]
    if outcome:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": fit(outcome, 3000)}})
    if pending.state == "pending":
        blocks.append({
            "type": "actions",
            "block_id": f"approval:{pending.id}",
            "elements": [
                {"type": "button", "action_id": "ir_approve", "style": "primary", "value": pending.id,
                 "text": {"type": "plain_text", "text": "Approve"},
                 "confirm": {"title": {"type": "plain_text", "text": "Approve this action?"},
                             "text": {"type": "mrkdwn", "text": f"{command} will run {where} as soon as the quorum is reached."[:300]},
                             "confirm": {"type": "plain_text", "text": "Approve"}, "deny": {"type": "plain_text", "text": "Back"}}},
                {"type": "button", "action_id": "ir_deny", "style": "danger", "value": pending.id, "text": {"type": "plain_text", "text": "Deny"}},
                {"type": "button", "action_id": "ir_cancel", "value": pending.id, "text": {"type": "plain_text", "text": "Cancel (requester)"}},
            ],
        })
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
    return text, blocks


def _outcome(pending) -> str:
    """The card's one or two lines about the plan or the steps (each of them is in the thread), and why it failed."""
    steps = pending.steps or pending.plan
    lines = []
    if steps:
        what = "Steps" if pending.steps else "Plan (dry run, nothing changed yet)"
        lines.append(f"{what}: {outcome_counts(steps)} — each in the thread.")
    failed = [s for s in pending.steps if s["outcome"] == "failed"]
    lines += [f"{OUTCOME_MARKS['failed']} {escape(s['title'])}: {escape(s.get('detail') or '')}" for s in failed[:2]]
    if pending.state in ("failed", "cancelled") and pending.note and not failed:
        # why it failed, or why irbot cancelled it (its incident was closed)
        lines.append(f"⚠️ {escape(shorten_digests(pending.note.splitlines()[0]))}")
    return "\n".join(lines)


def _status_line(pending) -> str:
    approvals = ", ".join(f"<@{a}> at {_when(pending.approvals[a])}" for a in pending.approvers)
    if pending.state == "planning":
        return "Working out the plan…"
    if pending.state == "pending":
        needed = pending.quorum - len(pending.approvals)
        so_far = f" Approved so far by {approvals}." if approvals else ""
        return f"Needs {needed} more approval{'s' if needed != 1 else ''} from an approver other than <@{pending.requester}>.{so_far}"
    if pending.state in ("approved", "running", "finished", "failed") and approvals:
        tail = {"approved": "", "running": " Running now.", "finished": " Finished.", "failed": " Failed."}[pending.state]
        return f"Approved by {approvals}.{tail}"
    if pending.state in ("denied", "cancelled"):
        return f"{pending.state.capitalize()} by <@{pending.ended_by}> at {_when(pending.ended_at)}; nothing was changed."
    if pending.state == "expired":
        return f"Expired unapproved at {_when(pending.ended_at or pending.expires_at)}; nothing was changed."
    return f"{pending.state.capitalize()}."


FINDING_BUTTONS = {"instance": (("isolate", "Isolate", "danger"), ("stop", "Stop", None)), "access-key": (("revoke-key", "Revoke key", "danger"),)}


def finding_line(finding: dict) -> str:
    """One finding in a line (raw words escaped): what, where, why it was found."""
    origin = "made by the key (CloudTrail)" if finding["by_key"] else "made since the leak date"
    return escape(f"{finding['kind']} {finding['id']} in {place(finding.get('account'), finding['region'])}, {origin}: {finding['detail']}")


def finding_buttons(request: CommandRequest, finding: dict) -> list[dict]:
    """The buttons that act on a finding (each opens an approval request), only the ones irbot would take typed."""
    region = finding["region"] if finding["region"] != "global" else None
    return [b for offered in FINDING_BUTTONS.get(finding["kind"], ())
            if (b := request_button(*offered, finding["id"], region, finding.get("account") or request.options.get("account")))]


def request_button_blocks(request: CommandRequest, finding: dict) -> list[dict]:
    """A finding as a line of a summary, with its buttons."""
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": fit(f"• {finding_line(finding)}", 3000)}}]
    buttons = finding_buttons(request, finding)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    return blocks


def finding_card(request: CommandRequest, finding: dict) -> tuple[str, list[dict]]:
    """One suspicious resource, with the buttons that act on it (each opens an approval request)."""
    origin = "made by the key (CloudTrail)" if finding["by_key"] else "made since the leak date"
    title = f"{finding['kind']} `{finding['id']}` in {place(finding.get('account'), finding['region'])}"
    text = escape(f"Finding of /ir {request.command} {' '.join(request.targets)}: ") + finding_line(finding)
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": fit(f":mag: *{escape(title)}* — {origin}\n{escape(finding['detail'])} · created "
                                                                   f"{escape(str(finding.get('created') or '?'))}", 3000)}},
    ]
    buttons = finding_buttons(request, finding)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"from request `{request.id}` · each button asks for approval like the command would"}]})
    return text, blocks


def request_button(command: str, label: str, style: str | None, target: str, region: str | None, account: str | None = None) -> dict | None:
    """A button that asks for ``command`` on ``target``, or None when the target or the region is not one the
    command would take typed: a card never carries a value that the click would turn into something else."""
    spec = actions.get(command)
    checked = targets.button_target(spec.target, target) if spec else None
    where = targets.region(region) if region else None
    owner = account if isinstance(account, str) and re.fullmatch(r"\d{12}", account) else None
    if checked is None or (region and where is None) or (account and owner is None):
        return None
    value = {"command": command, "target": checked, "region": where, **({"account": owner} if owner else {})}
    button = {"type": "button", "action_id": f"ir_request_{command}", "text": {"type": "plain_text", "text": label}, "value": json.dumps(value)}
    if style:
        button["style"] = style
    return button


def audit_trail(incident: str, records: list[dict], head: tuple[int, str], sealed: int, limit: int = 40) -> str:
    shown = records[-limit:]
    lines = [f"*Audit trail of {escape(incident)}* ({count(len(records), 'record')}, newest last)"]
    if len(records) > limit:
        lines.append(f"_{count(len(records) - limit, 'earlier record')}: `irbot audit export --incident {escape(incident)}`_")
    for r in shown:
        actor = f"<@{r['actor']}>" if re.fullmatch(r"[UW][A-Z0-9]{2,20}", r["actor"]) else escape(r["actor"])
        request = r.get("params", {}).get("request")
        what = f"{r['action']} {r.get('target', '')} {_detail(r)}".strip()
        lines.append(f"`#{r['seq']}` {r['time'][11:19]} {actor} {escape(what)} → {escape(str(r.get('outcome', '')))}" + (f" (request {request})" if request else ""))
    seq, digest = head
    lines.append(f"Chain head: record #{seq}, sha256 `{short(digest)}`; sealed to the evidence bucket up to #{sealed}.")
    return "\n".join(lines)


def _detail(record: dict) -> str:
    """The one parameter worth reading in a trail line."""
    params = record.get("params", {})
    if record["action"] == "evidence.stored":
        return f"{params.get('key', '').rsplit('/', 1)[-1]} sha256 {short(params.get('sha256'))}"
    if record["action"] == "step":
        return f"[{params.get('title', '')}]"
    if record["action"] in ("approval.refused", "request.refused", "job.refused", "request.cancelled") and params.get("why"):
        return f"({params.get('why', '')})"
    if record["action"] in ("incident.commander", "incident.severity"):
        return f"{params.get('from', '')} → {params.get('to', '')}"
    if record["action"] == "incident.update":
        return f"\"{' '.join(str(params.get('text', '')).split())[:80]}\""
    return ""


STATE_MARKS = {"queued": ":hourglass:", "connecting": ":electric_plug:", "capturing": ":arrow_down:", "reading": ":arrow_down:",
               "complete": ":white_check_mark:", "failed": ":x:"}
MOVING = ("capturing", "reading")


def memory_progress(request: CommandRequest, rows: dict[str, dict]) -> tuple[str, list[dict]]:
    """One line per target of a memory batch: bytes, speed, time left, state."""
    return transfer_progress(request, rows, "Memory capture", ":brain:", "target")


def image_progress(request: CommandRequest, rows: dict[str, dict]) -> tuple[str, list[dict]]:
    """One line per snapshot of an /ir image request, and the whole request's bytes, speed and time left."""
    return transfer_progress(request, rows, "Disk imaging", ":floppy_disk:", "image", total=True)


def transfer_progress(request: CommandRequest, rows: dict[str, dict], what: str, emoji: str, noun: str, *, total: bool = False) -> tuple[str, list[dict]]:
    lines = []
    for name, row in rows.items():
        done, expected, rate = row.get("done") or 0, row.get("expected"), row.get("rate") or 0.0
        moving = row.get("state") in MOVING
        amount = f"{human_size(done)}" + (f" of {human_size(expected)}" if expected else "")
        speed = f" · {rate / 1e6:.0f} MB/s" if rate and moving else ""
        eta = f" · {_duration(max(0, (expected - done) / rate))} left" if expected and rate and moving else ""
        tail = ""
        if row.get("state") == "complete":
            tail = f" · sha256 `{short(row.get('sha256'))}` · {escape(str(row.get('uri')))}" if row.get("sha256") else ""
        elif row.get("state") == "failed":
            tail = f" · {escape(row.get('reason', ''))}"
        lines.append(f"{STATE_MARKS.get(row.get('state'), '')} `{escape(name)}` — {escape(str(row.get('state')))} · {amount}{speed}{eta}{tail}")
    finished = sum(1 for r in rows.values() if r.get("state") in ("complete", "failed"))
    ended = f"{finished} of {len(rows)} {plural(len(rows), noun)} ended"
    if total and rows:
        done = sum(r.get("done") or 0 for r in rows.values())
        expected = sum(r.get("expected") or 0 for r in rows.values())
        rate = sum(r.get("rate") or 0.0 for r in rows.values() if r.get("state") in MOVING)
        ended += f" · {human_size(done)} of {human_size(expected)}" + (f" · {rate / 1e6:.0f} MB/s · {_duration((expected - done) / rate)} left" if rate else "")
    head = f"{what} for <@{request.user_id}> (request {request.id}): {ended}."
    text = "\n".join([head, *lines])
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"{emoji} *{what}* · {ended}"}},
              {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900] or "—"}},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": f"requested by <@{request.user_id}> · request `{request.id}`"}]}]
    return text, blocks


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


SEVERITY_MARKS = {"low": ":large_blue_circle:", "medium": ":large_yellow_circle:", "high": ":large_orange_circle:", "critical": ":red_circle:"}


def incident_card(incident, summary: dict, head: tuple[int, str]) -> tuple[str, list[dict]]:
    """The pinned card of an incident: what it is, who leads it, where every target stands."""
    status = "CLOSED" if incident.status == "closed" else "open"
    targets = [f"• `{escape(t)}`: {escape(', '.join(states))}" for t, states in summary["targets"].items()] or ["• none yet"]
    keys = ", ".join(f"`{escape(k)}`" for k in summary["keys_revoked"]) or "none"
    waiting = ", ".join(f"`{escape(w)}`" for w in summary["waiting"]) or "none"
    seq, digest = head
    lines = [
        f"{SEVERITY_MARKS.get(incident.severity, '')} *{escape(incident.id)}* — {escape(incident.title)}",
        f"Severity *{escape(str(incident.severity))}* · commander <@{incident.commander}> · status *{status}*",
        "*Targets*", *targets,
        f"*Keys revoked*: {keys}",
        f"*Approvals waiting*: {waiting}",
        f"*Evidence objects*: {summary['evidence']} · *audit chain head*: #{seq} `{short(digest)}`",
    ]
    if incident.summary:
        lines.append(f"*Summary*: {escape(incident.summary)}")
    text = "\n".join(lines)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}},
              {"type": "context", "elements": [{"type": "mrkdwn", "text": "`/ir status` · `/ir report` · " + (
                  "`/ir reopen` for more work" if incident.status == "closed" else "`/ir close --summary …`") + " · this card updates itself"}]}]
    return text, blocks


FINDING_ACTIONS = {"instance": (("collect", "Collect", None), ("isolate", "Isolate", "danger")), "access-key": (("revoke-key", "Revoke key", "danger"),)}
# Every command a card's button may ask for: a click asking for another is not one irbot drew.
CARD_COMMANDS = frozenset(command for table in (FINDING_BUTTONS, FINDING_ACTIONS) for offered in table.values() for command, _, _ in offered)


def finding_alert(finding) -> tuple[str, list[dict]]:
    """A GuardDuty or Security Hub finding, with the buttons that fit its resource.

    Whoever can import a finding wrote every string on it, so each is escaped (it can't ping, link or
    forge a button's look) wherever it is shown, and each block is cut to fit Slack's limits."""
    kind, resource_id = escape(finding.resource_kind), escape(finding.resource_id)
    resource = f"{kind} `{resource_id}`" if finding.resource_id else kind
    user = f" (user {escape(finding.user)})" if finding.user else ""
    severity = f"{finding.severity}" + (f" ({finding.score:g})" if finding.score is not None else "")
    title, kind_of_finding = escape(finding.title), escape(finding.type)
    account, region, first, last = escape(finding.account), escape(finding.region), escape(finding.first_seen), escape(finding.last_seen)
    source = finding.source if finding.product == finding.source else f"{finding.source} ({escape(finding.product)})"
    text = fit(f"{finding.source} finding: {title} — {severity}, {kind_of_finding}, account {account}, {region}, {resource}; "
               f"first seen {first}, last seen {last}, seen {_times(finding.count)}", 3000)
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": fit(f"{SEVERITY_MARKS.get(finding.severity, ':white_circle:')} *{title}*\n`{kind_of_finding}`", 3000)}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Severity*\n{severity}"},
            {"type": "mrkdwn", "text": fit(f"*Resource*\n{resource}{user}", 2000)},
            {"type": "mrkdwn", "text": fit(f"*Account / region*\n{account} / {region}", 2000)},
            {"type": "mrkdwn", "text": fit(f"*Seen*\n{_times(finding.count)}, {first} → {last}", 2000)},
        ]},
    ]
    severity_for_incident = finding.severity if finding.severity in SEVERITY_MARKS else "low"
    # Button values are never shown, so they carry the finding's words as they are; the worker escapes what it shows.
    buttons = [{"type": "button", "action_id": "ir_declare_finding", "style": "primary", "text": {"type": "plain_text", "text": "Declare incident"},
                "value": json.dumps({"title": textwrap.shorten(finding.title, 80, placeholder="…"), "severity": severity_for_incident,
                                     "finding": finding.id[:200]})}]
    buttons += [b for offered in FINDING_ACTIONS.get(finding.resource_kind, ())
                if (b := request_button(*offered, finding.resource_id, finding.region or None, finding.account or None))]
    blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": fit(f"{source} · `{escape(finding.id)}` · changing buttons ask for approval like the command", 3000)}]})
    return text, blocks
