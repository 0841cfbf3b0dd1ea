"""The incident report, in Markdown, written from the audit trail."""

from __future__ import annotations

from collections import OrderedDict


def report_markdown(incident, records: list[dict], head: tuple[int, str], sealed: int) -> str:
    lines = [
        f"# {incident.id}: {incident.title}",
        "",
        f"- Severity: {incident.severity}",
        f"- Commander: {incident.commander}",
        f"- Status: {incident.status}" + (f" (closed {incident.closed_at})" if incident.closed_at else ""),
        f"- Opened: {incident.opened_at or (records[0]['time'] if records else '-')}",
    ]
    if incident.summary:
        lines.append(f"- Summary: {incident.summary}")
    lines += ["", "## Timeline", "", "Every record of the incident's audit trail, oldest first.", "",
              "| # | time (UTC) | actor | action | target | outcome |", "| --- | --- | --- | --- | --- | --- |"]
    for r in records:
        lines.append(f"| {r['seq']} | {r['time']} | {r['actor']} | {r['action']} | {_cell(r.get('target', ''))} | {_cell(str(r.get('outcome', '')))} |")

    requests: "OrderedDict[str, dict]" = OrderedDict()
    for r in records:
        request = r.get("params", {}).get("request")
        if not request:
            continue
        entry = requests.setdefault(request, {"command": r["params"].get("command"), "target": r.get("target"), "requested_by": None,
                                              "approved_by": [], "refused": [], "outcome": "", "steps": []})
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
        lines.append(f"### `/ir {e['command']} {e['target']}` (request {request})")
        lines.append(f"- Requested by {e['requested_by'] or '-'}; approved by {', '.join(e['approved_by']) or 'nobody (read-only, or not approved)'}")
        if e["refused"]:
            lines.append(f"- Refused approvals: {', '.join(e['refused'])}")
        lines.append(f"- Outcome: {e['outcome'] or 'still open'}")
        lines += [f"  - {step}" for step in e["steps"]]
        lines.append("")

    lines += ["## Evidence", "", "| object | sha256 | bytes | location |", "| --- | --- | --- | --- |"]
    for r in records:
        if r["action"] == "evidence.stored":
            p = r["params"]
            lines.append(f"| {p['key'].rsplit('/', 1)[-1]} | `{p['sha256']}` | {p.get('size')} | `{p['key']}` (version {p.get('version_id')}) |")
    for r in records:
        if r["action"].endswith(".custody") and r["outcome"] == "complete":
            p = r["params"]
            lines.append(f"| {r['action'].removesuffix('.custody')} of {r.get('target')} | `{p.get('sha256')}` | {p.get('bytes')} | `{p.get('s3')}` (version {p.get('version_id')}) |")
    seq, digest = head
    lines += ["", "## Audit chain", "", f"Head: record #{seq}, sha256 `{digest}`; sealed to the evidence bucket up to #{sealed}.",
              "Check it with `irbot audit verify`.", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
