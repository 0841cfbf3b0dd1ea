"""The card of /ir analyze: per image, the OS and hostname, then what was found, worst first, each line saying where
it was found; a count of the rest, all of which are in the evidence (analysis-<volume>.jsonl, and the Timesketch
timeline). Every path and line comes from the suspect's disk: all of it is escaped, and cut to Slack's limits."""

from __future__ import annotations

from actions.words import count
from chat.messages import escape, fit, headline, short
from core.evidence import StoredObject
from core.request import CommandRequest

SHOWN_PER_IMAGE = 12
VALUE_CHARACTERS = 160
MARKS = {"high": ":red_circle:", "medium": ":large_orange_circle:", "low": ":large_yellow_circle:", "info": ":white_circle:"}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": fit(text, 3000)}}


def _cut(text: str) -> str:
    """At most VALUE_CHARACTERS, and no backtick: the disk's text goes in code spans, which a backtick would end."""
    text = text.replace("`", "ˋ")
    return text if len(text) <= VALUE_CHARACTERS else text[: VALUE_CHARACTERS - 1] + "…"


def finding_line(finding: dict) -> str:
    where = _cut(str(finding.get("path"))) + (f" line {finding['line']}" if finding.get("line") else "")
    value = _cut(str(finding.get("value", "")))
    return f"{MARKS.get(finding.get('severity'), '')} *{escape(str(finding.get('kind', '')).replace('_', ' '))}* `{escape(value)}` — {escape(where)}"


def image_text(entry: dict) -> str:
    findings = entry.get("findings") or []
    total = entry.get("findings_count", len(findings))
    severities = {}
    for finding in findings:
        severities[finding.get("severity")] = severities.get(finding.get("severity"), 0) + 1
    counted = ", ".join(f"{n} {s}" for s, n in severities.items()) or "nothing found"
    head = (f"*{escape(_cut(str(entry.get('volume'))))}.raw* (of `{escape(_cut(str(entry.get('snapshot'))))}`): {escape(_cut(str(entry.get('os'))))}"
            f"{' ' + escape(_cut(str(entry.get('version')))) if entry.get('version') else ''}, host `{escape(_cut(str(entry.get('hostname') or '?')))}` — "
            f"{count(total, 'finding')} ({counted}{' among the first ' + str(len(findings)) if total > len(findings) else ''})")
    head = fit(head, 600)
    lines: list[str] = []
    room = 2700 - len(head)  # of a block's 3,000 characters, leaving room for the count of the rest
    for finding in findings[:SHOWN_PER_IMAGE]:
        line = finding_line(finding)
        if len(line) + 1 > room:
            break
        lines.append(line)
        room -= len(line) + 1
    if total > len(lines):
        lines.append(f"…and {total - len(lines)} more, every one in analysis-{escape(_cut(str(entry.get('snapshot'))))}.jsonl")
    return "\n".join([head, *lines])


def card(request: CommandRequest, facts: dict, failed: list[str], stored: list[StoredObject]) -> tuple[str, list[dict]]:
    analyses = [a for part in _parts(facts) for a in part]
    total = sum(a.get("findings_count", len(a.get("findings") or [])) for a in analyses)
    state = "Done" if not failed else "Done, with failures" if analyses else "Failed"
    title = f"{state}: {headline(request.command, request.targets, request.options)} — {count(total, 'finding')} on {count(len(analyses), 'image')}"
    texts = [image_text(a) for a in analyses] + [f":x: {escape(f)}" for f in failed]
    blocks = [_section(f"*{escape(title)}*")] + [_section(t) for t in texts[:40]]
    tail = "; ".join(f"{escape(o.name)} sha256 `{short(o.sha256)}`" for o in stored if o.name.startswith(("analysis-", "timeline-")))
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": fit(
        f"requested by <@{request.user_id}> · request `{request.id}` · read in place from the images, nothing written to them"
        + (f" · {tail}" if tail else ""), 3000)}]})
    text = fit("\n".join([title, *texts]), 3000)
    return text, blocks[:50]


def _parts(facts: dict) -> list[list[dict]]:
    """The analyses of one target (facts["analyses"]), or of each target of a many-target request (facts[target]["analyses"])."""
    if "analyses" in facts:
        return [facts["analyses"]]
    return [v.get("analyses", []) for v in facts.values() if isinstance(v, dict)]
