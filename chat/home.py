"""irbot's Home tab: open incidents, requests waiting for approval, the latest findings, the organization's
instances and the latest readiness score, for the responders and approvers; a short word for anyone else.

Anyone in the workspace can open an app's Home tab, so the overview (instance IDs, findings) is drawn only for
someone irbot would take a command or an approval from. The view stays within Slack's limits (100 blocks, 3,000
characters a text) however large the organization: each part shows a bounded number of lines and says how many
more there are. Titles, names and IDs come from attackers as often as not, and are escaped.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable

from redis import Redis

from actions.words import count, plural
from chat.messages import SEVERITY_MARKS, escape, fit, headline
from chat.slack import Slack
from core import latest_findings, overview, readiness
from core.approvals import PENDING, ApprovalBook
from core.incidents import SEVERITIES, IncidentBook
from core.logs import get_logger
from core.request import scope

log = get_logger(__name__)

MAX_BLOCKS = 100
TEXT_LIMIT = 3000
LINE_LIMIT = 400  # one line: a hostile title can't fill a block by itself
BLOCKS_PER_PART = 2  # section blocks a part's lines may take
SHOWN = {"incidents": 25, "approvals": 15, "findings": 8, "places": 20, "images": 8, "failed checks": 8}
FINDINGS_READ = SHOWN["findings"]
# Written by /ir prep's worker: the newest readiness check of the organization.
PERSON = re.compile(r"[UW][A-Z0-9]{2,20}")
CHANNEL = re.compile(r"[CG][A-Z0-9]{2,20}")


def person(user_id: str) -> str:
    """A mention for a Slack member ID; anything else shown as the characters it is."""
    return f"<@{user_id}>" if isinstance(user_id, str) and PERSON.fullmatch(user_id) else escape(str(user_id))


def age(seconds: float) -> str:
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "at a time irbot can't read"
    if seconds < 60:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text, TEXT_LIMIT)}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(text, TEXT_LIMIT)}]}


def lines_blocks(lines: list[str], total: int, noun: str, *, blocks: int = BLOCKS_PER_PART) -> list[dict]:
    """``lines`` (the first of ``total`` things) as at most ``blocks`` section blocks of TEXT_LIMIT characters, and a
    context line counting the ``noun`` that did not fit ("and 475 more incidents")."""
    out: list[dict] = []
    text, used = "", 0
    for line in lines:
        line = fit(line, LINE_LIMIT)
        if text and len(text) + 1 + len(line) > TEXT_LIMIT:
            if len(out) + 1 == blocks:
                break
            out.append(_section(text))
            text = ""
        text = f"{text}\n{line}" if text else line
        used += 1
    if text:
        out.append(_section(text))
    if total > used:
        out.append(_context(f"…and {total - used} more {plural(total - used, noun)}"))
    return out


def incident_lines(incidents) -> list[str]:
    """Most severe first, then the newest."""
    ranked = sorted(incidents, key=lambda i: i.opened_at or "", reverse=True)
    ranked.sort(key=lambda i: SEVERITIES.index(i.severity) if i.severity in SEVERITIES else -1, reverse=True)
    return [f"{SEVERITY_MARKS.get(i.severity, ':white_circle:')} *{escape(i.id)}* {escape(i.title)} — {escape(i.severity)}, "
            f"commander {person(i.commander)}" + (f", <#{i.channel_id}>" if CHANNEL.fullmatch(i.channel_id or "") else "")
            for i in ranked]


def approval_lines(pending: list, now: float) -> list[str]:
    lines = []
    for p in pending:
        request = p.request
        where = escape(scope(request.command, request.targets, request.options.get("account"), request.region,
                             accounts=request.options.get("accounts")))
        try:
            asked = (now - datetime.fromisoformat(request.received_at).timestamp())
        except (TypeError, ValueError):
            asked = 0
        lines.append(f"• `{escape(p.id)}` {headline(request.command, request.targets, request.options)} {where} — "
                     f"asked by {person(request.user_id)} {age(asked)}, needs {count(p.quorum - len(p.approvals), 'more approval')}")
    return lines


def finding_lines(findings: list[dict]) -> list[str]:
    def said(summary: dict, key: str) -> str:
        return escape(str(summary.get(key) or "?"))

    return [f"{SEVERITY_MARKS.get(str(f.get('severity')), ':white_circle:')} *{said(f, 'title')}* — {said(f, 'severity')}, "
            f"{said(f, 'source')}, {said(f, 'account')} {said(f, 'region')}, {said(f, 'kind')} `{said(f, 'resource')}` · "
            f"last seen {said(f, 'last_seen')}" for f in findings]


def overview_blocks(found: dict | None, now: datetime, refreshing: bool) -> list[dict]:
    """The organization's instances: by account and region, by AMI, launched in the last 24 hours."""
    blocks = [_header("Instances across the organization")]
    if not found:
        return blocks + [_context(":hourglass_flowing_sand: Being gathered from every account and region; this tab is drawn "
                                  "again when it is ready.")]
    when = f"gathered {age(overview.age_seconds(found, now))}" + ("; being gathered again" if refreshing else "")
    if found.get("error"):
        return blocks + [_context(f":warning: irbot could not gather the instances ({when}): {escape(str(found['error']))}")]
    places, images = found.get("places", []), found.get("images", [])
    total = int(found.get("total", 0))
    blocks.append(_section(f"*{count(total, 'instance')}* in {count(int(found.get('accounts', 0)), 'account')} × "
                           f"{count(int(found.get('regions', 0)), 'region')} · {when}"))
    shown = [f"• {escape(str(a))} {escape(str(r))}: {int(n)}" for a, r, n in places[:SHOWN["places"]]]
    blocks.append(_section("\n".join(["*By account and region*", *(shown or ["none"])])))
    rest = places[SHOWN["places"]:]
    if rest:
        blocks.append(_context(f"…and {count(len(rest), 'more account and region', 'more accounts and regions')} with "
                               f"{count(sum(int(n) for _, _, n in rest), 'instance')}"))
    kinds, instances = (found.get("other_images") or [0, 0])[:2]
    shown_images = [f"• `{escape(str(image))}`: {int(n)}" for image, n in images[:SHOWN["images"]]]
    hidden = images[SHOWN["images"]:]
    kinds, instances = int(kinds) + len(hidden), int(instances) + sum(int(n) for _, n in hidden)
    blocks.append(_section("\n".join(["*By AMI*", *shown_images] if shown_images else ["*By AMI*", "none"])
                           + (f"\n…and {count(kinds, 'other AMI')} with {count(instances, 'instance')}" if kinds else "")))
    newest = [f"• `{escape(str(n.get('id')))}` {escape(str(n.get('type')))} in {escape(str(n.get('account')))} "
              f"{escape(str(n.get('region')))}, launched {escape(str(n.get('launched')))}" for n in found.get("newest", [])[:5]]
    blocks.append(_section("\n".join([f"*Launched in the last 24 hours*: {int(found.get('recent', 0))}", *newest])))
    if found.get("problem_count"):
        problems = [escape(str(p)) for p in found.get("problems", [])[:3]]
        blocks.append(_context(f":warning: {count(int(found['problem_count']), 'part')} could not be counted: " + "; ".join(problems)))
    return blocks


def prep_blocks(prep: dict | None) -> list[dict]:
    blocks = [_header("Readiness")]
    if not prep:
        return blocks + [_section("No readiness check yet — run `/ir prep`.")]
    failed = [escape(str(f.get("title") or f.get("name") or f) if isinstance(f, dict) else str(f)) for f in prep.get("failed", [])]
    shown = failed[:SHOWN["failed checks"]]
    text = (f"*{int(prep.get('score', 0))}%* — {int(prep.get('passed', 0))} of {int(prep.get('total', 0))} checks passed"
            f" in account {escape(str(prep.get('account', '?')))} at {escape(str(prep.get('at', '?')))}"
            f" (request `{escape(str(prep.get('request', '?')))}`)")
    if shown:
        text += "\nFailed: " + ", ".join(shown) + (f", and {len(failed) - len(shown)} more" if len(failed) > len(shown) else "")
    if prep.get("evidence"):
        text += f"\nEvidence: {escape(str(prep['evidence']))}"
    return blocks + [_section(text)]


def home_view(*, incidents: list, pending: list, findings: list[dict], found: dict | None, prep: dict | None,
              now: datetime, refreshing: bool = False, problems: list[str] = ()) -> dict:
    """The responders' Home tab. ``problems``: a line for each part irbot could not read (shown instead of it)."""
    blocks: list[dict] = [_header("irbot — incident response"),
                          _context(f"Drawn at {now:%H:%M} UTC · `/ir help` lists the commands")]
    if problems:
        blocks.append(_context(":warning: " + "; ".join(escape(p) for p in problems)))
    lines = incident_lines(incidents)
    blocks += [_header(f"Open incidents ({len(lines)})"),
               *(lines_blocks(lines[:SHOWN["incidents"]], len(lines), "incident") or [_section("None open.")])]
    lines = approval_lines(pending, now.timestamp())
    blocks += [_header(f"Waiting for approval ({len(lines)})"),
               *(lines_blocks(lines[:SHOWN["approvals"]], len(lines), "request") or [_section("Nothing waits for an approval.")])]
    lines = finding_lines(findings)
    blocks += [_header("Latest findings"), *(lines_blocks(lines[:SHOWN["findings"]], len(lines), "finding") or [_section("None yet.")])]
    # Drawn from what a worker and /ir prep stored: a shape irbot can't draw costs that part alone.
    blocks += _drawn("Instances across the organization", lambda: overview_blocks(found, now, refreshing))
    blocks += _drawn("Readiness", lambda: prep_blocks(prep))
    return {"type": "home", "blocks": blocks[:MAX_BLOCKS]}


def _drawn(title: str, draw: Callable[[], list[dict]]) -> list[dict]:
    try:
        return draw()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        log.error("home tab part not drawn", part=title, error=type(exc).__name__)
        return [_header(title), _context(f":warning: irbot could not draw this part ({type(exc).__name__}).")]


def outsider_view(user_id: str, approvers: list[str]) -> dict:
    """For someone who is neither a responder nor an approver: what irbot is, and whom to ask. Nothing else."""
    ask = ", ".join(person(a) for a in approvers[:3])
    return {"type": "home", "blocks": [
        _header("irbot — incident response"),
        _section("irbot is the incident responders' tool: it acts in AWS during an incident, under a two-person rule, "
                 "so what it knows is shown to them alone."),
        _context(f"To become a responder, ask whoever runs irbot{f' (or an approver: {ask})' if ask else ''} to add your member ID "
                 f"{escape(user_id)} to IR_RESPONDERS."),
    ]}


def _part(what: str, read: Callable, problems: list[str], empty):
    """One part of the Home tab, read; a failure becomes a line, never an exception."""
    try:
        return read()
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the rest of the tab is still drawn
        log.error("home tab part unreadable", part=what, error=type(exc).__name__)
        problems.append(f"{what} could not be read ({type(exc).__name__})")
        return empty


def publish_home(slack: Slack, connection: Redis, book: ApprovalBook, user_id: str, *, refresh: bool) -> None:
    """Draw ``user_id``'s Home tab from what Redis holds and publish it; never raises. With ``refresh``, an overview
    missing or older than core.overview's FRESH_SECONDS is asked for, and this user's tab drawn again once it is in."""
    try:
        if not (book.is_responder(user_id) or book.may_approve(user_id)):
            slack.publish_home(user_id, outsider_view(user_id, sorted(book.approvers)))
            return
        problems: list[str] = []
        now = datetime.now(timezone.utc)
        found = _part("the instance overview", lambda: overview.load(connection), problems, None)
        if refresh and (found is None or overview.age_seconds(found, now) > overview.FRESH_SECONDS):
            _part("the overview's refresh", lambda: overview.ask_for_refresh(connection, user_id), problems, None)
        view = home_view(
            incidents=_part("open incidents", lambda: IncidentBook(connection).open_incidents(), problems, []),
            pending=_part("requests waiting for approval", lambda: _waiting(book), problems, []),
            findings=_part("the latest findings", lambda: latest_findings.latest(connection, FINDINGS_READ), problems, []),
            found=found, prep=_part("the readiness score", lambda: _prep(connection), problems, None), now=now,
            refreshing=bool(_part("the overview's refresh", lambda: overview.refreshing(connection), problems, False)),
            problems=problems)
        slack.publish_home(user_id, view)
    except Exception as exc:  # noqa: BLE001 - an event listener or a job must not fail for the tab
        log.error("home tab not drawn", error=type(exc).__name__)


def _waiting(book: ApprovalBook) -> list:
    """Requests whose buttons are live: waiting for an approval, their window still open (on Redis's clock)."""
    now = book.now()
    return [p for p in book.open_requests() if p.state == PENDING and p.expires_at > now]


def _prep(connection: Redis) -> dict | None:
    found = readiness.latest(connection)
    return found if isinstance(found, dict) else None
