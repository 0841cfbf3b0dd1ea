"""The incident report, in Markdown, written from the audit trail.

Much of what it shows came from outside: a title copied from a finding, a close summary, resource
names and step details from AWS. Every such string is escaped (_text, _cell, _code), so the report
renders as text wherever it is read — no image that calls an attacker's server, no forged link, no
HTML.
"""

from __future__ import annotations

import html
import re
from collections import OrderedDict

from core.request import Places


def report_markdown(incident, records: list[dict], head: tuple[int, str], sealed: int) -> str:
    lines = [
        f"# {_text(incident.id)}: {_text(incident.title)}",
        "",
        f"- Severity: {_text(incident.severity)}",
        f"- Commander: {_text(incident.commander)}",
        f"- Status: {_text(incident.status)}" + (f" (closed {_text(incident.closed_at)})" if incident.closed_at else ""),
        f"- Opened: {_text(incident.opened_at or (records[0]['time'] if records else '-'))}",
    ]
    if incident.summary:
        lines.append(f"- Summary: {_text(incident.summary)}")
    lines += ["", "## Timeline", "", "Every record of the incident's audit trail, oldest first.", "",
              "| # | time (UTC) | actor | action | target | outcome |", "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {_cell(r['seq'])} | {_cell(r['time'])} | {_cell(r['actor'])} | {_cell(r['action'])} | {_cell(r.get('target', ''))} | {_cell(r.get('outcome', ''))} |")

    requests: "OrderedDict[str, dict]" = OrderedDict()
    places = Places()
    for r in records:
        request = r.get("params", {}).get("request")
        if not request:
            continue
        entry = requests.setdefault(request, {"command": r["params"].get("command"), "target": r.get("target"), "requested_by": None,
                                              "approved_by": [], "refused": [], "outcome": "", "steps": []})
        places.note(request, r["params"])
        if r["action"] in ("request.opened", "request.queued"):
            entry["requested_by"] = r["actor"]
        if r["action"] in ("request.approved", "approval.counted"):
            entry["approved_by"].append(r["actor"])
        if r["action"] == "approval.refused":
            entry["refused"].append(f"{r['actor']} ({r['params'].get('why')})")
        if r["action"] in ("job.finished", "request.denied", "request.cancelled", "request.expired", "request.failed"):
            entry["outcome"] = f"{r['action']}: {r.get('outcome')}"
        if r["action"] == "step":
            entry["steps"].append(f"{r['params'].get('title')}: {r.get('outcome')}")
    lines += ["", "## Actions and approvals", ""]
    for request, e in requests.items():
        command = f"/ir {e['command']} {e['target']}"
        where = places.of(request)
        lines.append(f"### {_code(command)}" + (f" in {_text(where)}" if where else "") + f" (request {_text(request)})")
        lines.append(f"- Requested by {_text(e['requested_by'] or '-')}; approved by {_text(', '.join(e['approved_by'])) or 'nobody (read-only, or not approved)'}")
        if e["refused"]:
            lines.append(f"- Refused approvals: {_text(', '.join(e['refused']))}")
        lines.append(f"- Outcome: {_text(e['outcome']) or 'still open'}")
        lines += [f"  - {_text(step)}" for step in e["steps"]]
        lines.append("")

    lines += ["## Evidence", "", "| object | sha256 | bytes | location |", "| --- | --- | --- | --- |"]
    for r in records:
        if r["action"] == "evidence.stored":
            p = r["params"]
            lines.append(f"| {_cell(p['key'].rsplit('/', 1)[-1])} | {_code(p['sha256'])} | {_cell(p.get('size'))} | {_code(p['key'])} (version {_cell(p.get('version_id'))}) |")
    for r in records:
        if r["action"].endswith(".custody") and r["outcome"] == "complete":
            p = r["params"]
            lines.append(f"| {_cell(r['action'].removesuffix('.custody'))} of {_cell(r.get('target'))} | {_code(p.get('sha256'))} | {_cell(p.get('bytes'))} | {_code(p.get('s3'))} (version {_cell(p.get('version_id'))}) |")
    seq, digest = head
    lines += ["", "## Audit chain", "", f"Head: record #{seq}, sha256 `{digest}`; sealed to the evidence bucket up to #{sealed}.",
              "Check it with `irbot audit verify`.", ""]
    return "\n".join(lines)


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
