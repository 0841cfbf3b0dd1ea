"""The readiness card of /ir prep: the score, each failing check with what it found and what to do (worst first),
the checks that couldn't be run with why, the passing ones counted; everything, check by check, in its thread.

Whatever the number of accounts, regions and resources, it stays within Slack's limits (50 blocks a message,
3,000 characters a block): a check is one block however many places it failed in, naming the worst few
resources and counting the rest. Every name from AWS (buckets, users, tags) is escaped.
"""

from __future__ import annotations

from actions.words import count, plural
from chat.messages import escape, fit, headline, short
from core.evidence import StoredObject
from core.request import CommandRequest, asked_scope

SHOWN_ON_CARD = 10  # failing or unknown checks drawn on the card itself; the others are in its thread
PLACES_NAMED = 6
MARKS = {"failed": ":x:", "couldn't check": ":grey_question:", "passed": ":white_check_mark:"}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text, 3000)}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": fit(text, 3000)}]}


def score_line(report: dict) -> str:
    if report.get("score") is None:
        return "Readiness: no check applied"
    return f"Readiness {report['score']}% ({report['passed']} of {count(report['total'], 'check')} pass)"


def _places(entry: dict) -> str:
    places = entry.get("places") or []
    if not places:
        return ""
    named = ", ".join(escape(p) for p in places[:PLACES_NAMED]) + (", …" if len(places) > PLACES_NAMED else "")
    return f" in {count(len(places), 'place')}: {named}" if len(places) > 1 else f" in {named}"


def check_text(entry: dict, *, fix: bool = True) -> str:
    """One check as the card and the thread draw it: its mark, title, where, what was found, the worst offenders, the fix."""
    lines = [f"{MARKS.get(entry['status'], '')} *{escape(entry['title'])}*{_places(entry)}: {escape(entry['found'])}"]
    if entry.get("offenders"):
        more = f" and {entry['more']} more" if entry.get("more") else ""
        lines.append("• " + ", ".join(f"`{escape(o)}`" for o in entry["offenders"]) + more)
    if fix and entry["status"] == "failed":
        lines.append(f"_Fix_: {escape(entry['fix'])}")
    return "\n".join(lines)


def card(request: CommandRequest, report: dict, region: str, evidence: StoredObject | None) -> tuple[str, list[dict]]:
    """The request's top-level message once it ended."""
    command = headline(request.command, request.targets, request.options)
    where = escape(asked_scope(request.command, request.targets, request.options, region, regions=len(report.get("regions") or ()) or None))
    checks = report.get("checks") or []
    bad = [e for e in checks if e["status"] != "passed"]
    passing = len(checks) - len(bad)
    heading = f":clipboard: *{score_line(report)}*: {command} {where}"
    blocks = [_section(heading + "\nA check counts as passed only where it passed everywhere it ran; one that couldn't be run counts as not passed.")]
    blocks += [_section(check_text(entry)) for entry in bad[:SHOWN_ON_CARD]]
    rest = len(bad) - min(len(bad), SHOWN_ON_CARD)
    tail = [f"{MARKS['passed']} {count(passing, 'check')} {plural(passing, 'passes', 'pass')}"]
    if rest:
        tail.append(f"{count(rest, 'more check')} not passing")
    tail.append("each check in the thread")
    if evidence is not None:
        tail.append(f"`{escape(evidence.name)}` sha256 `{short(evidence.sha256)}`")
    tail.append(f"requested by <@{request.user_id}> · request `{request.id}`")
    blocks.append(_context(" · ".join(tail)))
    text = "\n".join([f"{score_line(report)}: {command} {where}, for <@{request.user_id}>.",
                      *(f"{MARKS.get(e['status'], '')} {escape(e['title'])}: {escape(e['found'])}" for e in bad[:3])])
    return fit(text, 3000), blocks


def detail(report: dict, stored: list[StoredObject]) -> tuple[str, list[dict]]:
    """The request's thread: every check that didn't pass, in full, and the passing ones by name; the evidence."""
    checks = report.get("checks") or []
    bad = [check_text(e) for e in checks if e["status"] != "passed"]
    good = [escape(e["title"]) for e in checks if e["status"] == "passed"]
    blocks = [_section(text) for text in bad[:40]]
    if len(bad) > 40:
        blocks.append(_context(f"{count(len(bad) - 40, 'more check')} not passing: every verdict is in the saved evidence."))
    if good:
        blocks.append(_section(f"{MARKS['passed']} *Passing*: " + "; ".join(good)))
    saved = [f"Saved {escape(o.name)} (sha256 {short(o.sha256)}) to {escape(o.uri)}" for o in stored]
    blocks += [_context(line) for line in saved]
    text = "\n".join([*bad, *([f"Passing: {'; '.join(good)}"] if good else []), *saved])
    return fit(text, 3000), blocks[:49]  # one block is left for the audit seal
