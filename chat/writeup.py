"""The incident report, in Markdown, written from the audit trail.

It is read outside Slack, by people who weren't there: people are named ("Alice Example (U0ALICE01)"),
the work is grouped per target with who asked, who approved and how it ended, and runs of identical
records are folded ("8 evidence objects stored") so the timeline reads as what happened.

Much of what it shows came from outside: a title copied from a finding, a close summary, resource
names and step details from AWS, people's names from Slack. Every such string is escaped (_text,
_cell, _code), so the report renders as text wherever it is read — no image that calls an
attacker's server, no forged link, no HTML.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict
from typing import Callable

import actions
from actions.registry import Risk
from actions.words import count
from core.request import Places

SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
# A run of these records, one after another for the same request and target, is one line of the timeline.
FOLDED = {"evidence.stored": ("evidence object stored", "evidence objects stored")}
ENDINGS = {"request.denied": "denied", "request.cancelled": "cancelled", "request.expired": "expired unapproved, nothing changed",
           "request.failed": "failed", "job.finished": None}


def report_markdown(incident, records: list[dict], head: tuple[int, str], sealed: int, name: Callable[[str], str] = lambda _: "") -> str:
    """``name`` gives a Slack user's name ("" when unknown). People are shown "Alice Example (U0ALICE01)", or by ID alone."""

    def who(actor) -> str:
        """An actor as escaped Markdown: a person named with the ID beside, a worker or irbot as recorded."""
        actor = str(actor or "")
        known = name(actor) if SLACK_USER.fullmatch(actor) else ""
        return f"{_text(known)} ({actor})" if known else _text(actor)

    lines = [
        f"# {_text(incident.id)}: {_text(incident.title)}",
        "",
        f"- Severity: {_text(incident.severity)}",
        f"- Commander: {who(incident.commander)}",
        f"- Status: {_text(incident.status)}" + (f" (closed {_text(incident.closed_at)})" if incident.closed_at else ""),
        f"- Opened: {_text(incident.opened_at or (records[0]['time'] if records else '-'))}",
    ]
    if incident.summary:
        lines.append(f"- Summary: {_text(incident.summary)}")
    lines += ["", *_actions(records, who), *_timeline(records, who), *_evidence(records)]
    seq, digest = head
    lines += ["", "## Audit chain", "", f"Head: record #{seq}, sha256 `{digest}`; sealed to the evidence bucket up to #{sealed}.",
              "Check it with `irbot audit verify`.", ""]
    return "\n".join(lines)


def _actions(records: list[dict], who: Callable[[str], str]) -> list[str]:
    """Every request, grouped under the target it acted on: who asked, who approved, how it ended, its steps."""
    requests: "OrderedDict[str, dict]" = OrderedDict()
    places = Places()
    for r in records:
        params = r.get("params", {})
        request = params.get("request")
        if not request:
            continue
        places.note(request, params)
        e = requests.setdefault(request, {"command": params.get("command"), "target": r.get("target") or "", "options": params.get("options") or {},
                                          "requested_by": None, "approved_by": [], "refused": [], "ended": "", "steps": [], "evidence": 0})
        action, actor = r["action"], who(r["actor"])
        if action in ("request.opened", "request.queued"):
            e["requested_by"] = actor
            e["options"] = params.get("options") or e["options"]
        elif action in ("request.approved", "approval.counted"):
            e["approved_by"].append(actor)
        elif action == "approval.refused":
            e["refused"].append(f"{actor} ({_text(params.get('why'))})")
        elif action == "step":
            e["steps"].append(f"{params.get('title')}: {r.get('outcome')}")
        elif action == "evidence.stored":
            e["evidence"] += 1
        elif action in ENDINGS:
            e["ended"] = _ending(action, actor, r.get("outcome"), params)
    by_target: "OrderedDict[str, list[tuple[str, dict]]]" = OrderedDict()
    for request, e in requests.items():
        by_target.setdefault(places.named(e["target"], request), []).append((request, e))
    lines = ["## Actions by target", ""]
    if not by_target:
        lines += ["No action was asked for.", ""]
    for target, asked in by_target.items():
        lines += [f"### {_code(target) or 'no target'}", ""]
        for request, e in asked:
            lines.append(f"- {_code('/ir ' + str(e['command']))} (request {_text(request)}): requested by {e['requested_by'] or '-'}; "
                         f"{_approval(e)}. Outcome: {e['ended'] or 'still open'}"
                         + (f"; {count(e['evidence'], 'evidence object')} stored." if e["evidence"] else "."))
            if e["refused"]:
                lines.append(f"  - Approvals refused: {', '.join(e['refused'])}")
            lines += [f"  - {_text(step)}" for step in e["steps"]]
        lines.append("")
    return lines


def _approval(e: dict) -> str:
    spec = actions.get(e["command"] or "")
    if spec is None or spec.risk is Risk.READ or e["options"].get("dry_run"):
        return "no approval needed (read-only)"
    if e["approved_by"]:
        return "approved by " + ", ".join(e["approved_by"])
    return "not approved"


def _ending(action: str, actor: str, outcome, params: dict) -> str:
    """How a request ended, as escaped Markdown (``actor`` is escaped already)."""
    if action == "job.finished":
        said = {"ok": "done", "finished": "done", "failed": "failed", "crashed": "failed (the worker crashed)"}.get(str(outcome), str(outcome))
        why = params.get("error") or params.get("note")
        return _text(f"{said}: {why}" if why and said != "done" else said)
    if action in ("request.denied", "request.cancelled"):
        return f"{ENDINGS[action]} by {actor}, nothing changed"
    if action == "request.failed":
        return "failed: " + _text(params.get("reason") or params.get("note") or "see the audit trail")
    return ENDINGS[action]


def _timeline(records: list[dict], who: Callable[[str], str]) -> list[str]:
    """The audit trail, oldest first, with each run of identical records (same actor, action, request, target and
    outcome) folded into one row: "#12–19 … 8 evidence objects stored"."""
    lines = ["## Timeline", "", "The incident's audit trail, oldest first; a run of identical records is one row.", "",
             "| # | time (UTC) | who | what | target | outcome |", "| --- | --- | --- | --- | --- | --- |"]
    runs: list[list[dict]] = []
    for r in records:
        if runs and _same(runs[-1][-1], r):
            runs[-1].append(r)
        else:
            runs.append([r])
    for run in runs:
        first, last = run[0], run[-1]
        seqs = f"{first['seq']}" if len(run) == 1 else f"{first['seq']}–{last['seq']}"
        times = first["time"] if len(run) == 1 or first["time"] == last["time"] else f"{first['time']} – {last['time']}"
        words = FOLDED.get(first["action"])
        what = f"{len(run)} {words[1]}" if words and len(run) > 1 else (words[0] if words else first["action"])
        if first["action"] == "step":
            what = f"step: {(first.get('params') or {}).get('title', '')}"
        lines.append(f"| {_cell(seqs)} | {_cell(times)} | {who(first['actor'])} | {_cell(what)} | {_cell(first.get('target', ''))} "
                     f"| {_cell(first.get('outcome', ''))} |")
    return lines + [""]


def _same(a: dict, b: dict) -> bool:
    request = (a.get("params") or {}).get("request")
    return (a["action"] in FOLDED and request is not None and request == (b.get("params") or {}).get("request")
            and all(a.get(k) == b.get(k) for k in ("action", "actor", "target", "outcome")))


def _evidence(records: list[dict]) -> list[str]:
    lines = ["## Evidence", "", "| object | sha256 | bytes | location |", "| --- | --- | --- | --- |"]
    for r in records:
        if r["action"] == "evidence.stored":
            p = r["params"]
            lines.append(f"| {_cell(p['key'].rsplit('/', 1)[-1])} | {_code(p['sha256'])} | {_cell(p.get('size'))} | {_code(p['key'])} (version {_cell(p.get('version_id'))}) |")
    for r in records:
        if r["action"].endswith(".custody") and r["outcome"] == "complete":
            p = r["params"]
            lines.append(f"| {_cell(r['action'].removesuffix('.custody'))} of {_cell(r.get('target'))} | {_code(p.get('sha256'))} | {_cell(p.get('bytes'))} | {_code(p.get('s3'))} (version {_cell(p.get('version_id'))}) |")
    return lines


# What can start markup inline: emphasis, code, links and images, tables, strikethrough; "://" and
# "www." so GitHub doesn't turn a bare URL into a link. "<" and "&" are HTML-escaped instead.
MARKDOWN = re.compile(r"[\\`*_\[\]()!|~]|:(?=//)|(?<=www)\.", re.IGNORECASE)


def _text(value) -> str:
    """Untrusted text as inline Markdown: one line, markup and HTML escaped, URLs not turned into links."""
    one_line = " ".join(str(value if value is not None else "").split())
    return MARKDOWN.sub(lambda m: "\\" + m.group(0), html.escape(one_line, quote=False))


def _cell(value) -> str:
    return _text(value)  # pipes are escaped with the rest, so a value can't add a column


def _code(value) -> str:
    """A code span: literal inside, so only a backtick (which would end it) and newlines need care."""
    inner = " ".join(str(value if value is not None else "").split()).replace("`", "ˋ")
    return f"`{inner}`" if inner else ""
