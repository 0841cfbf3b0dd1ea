"""A request in the channel: one short top-level message (what was asked, by whom, where it stands, how it
ended), and its detail — steps, evidence lists, notes, the audit seal — in that message's thread.

A channel in an incident is read under stress: what everyone must see stays short, and everything else is one
click away. Digests are shown by their first 12 hex characters; the full ones are in each object's metadata,
the stored objects and the report.
"""

from __future__ import annotations

from actions.artefacts import Result
from actions.words import count
from core.evidence import Protection, StoredObject
from core.request import CommandRequest, asked_scope, place, scope
from chat.messages import (OUTCOME_MARKS, escape, finding_line, headline, human_size, outcome_counts, request_button_blocks, short,
                           shorten_digests, step_lines)

WORST_SHOWN = 3  # findings named in hunt-key's top-level message; the rest are cards in its thread


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2900]}]}


def request_started(request: CommandRequest, region: str) -> tuple[str, list[dict]]:
    """The top-level message of a read-only request while it runs; its outcome replaces it."""
    command = headline(request.command, request.targets, request.options)
    where = escape(asked_scope(request.command, request.targets, request.options, region))
    text = f"Running: {command} {where}, for <@{request.user_id}> (request {request.id})."
    return text, [{"type": "section", "text": {"type": "mrkdwn", "text": f":gear: *Running*: {command} {where}"}},
                  _context(f"requested by <@{request.user_id}> · request `{request.id}` · detail in the thread")]


def steps_summary(request: CommandRequest, steps: list[dict], region: str, *, state: str, notes: int = 0,
                  worst: list[dict] = (), findings: int = 0, regions: int | None = None) -> tuple[str, list[dict]]:
    """The top-level message of a request made of steps, once it ended: the headline, the count of steps by
    outcome, and for a hunt the worst findings (with their buttons); the steps themselves are in the thread."""
    command = headline(request.command, request.targets, request.options)
    where = escape(scope(request.command, request.targets, request.options.get("account"), region, regions=regions,
                         accounts=request.options.get("accounts")))
    failed = [s for s in steps if s["outcome"] == "failed"]
    counted = " · ".join(p for p in (outcome_counts(steps), findings and count(findings, "finding")
                                     + (f", the worst {len(worst)}:" if findings > len(worst) else ":")) if p)
    said = [counted] + [f"{OUTCOME_MARKS['failed']} {escape(s['title'])}: {escape(s.get('detail') or '')}" for s in failed[:2]]
    text_lines = [f"{state}: {command} {where}, for <@{request.user_id}>" + (f": {said[0]}" if said[0] else "."), *said[1:]]
    text_lines += [f"• {line}" for line in map(finding_line, worst)]
    tail = f"requested by <@{request.user_id}> · request `{request.id}` · steps" + (f", {count(notes, 'note')}" if notes else "") + \
        (f", {count(findings - len(worst), 'more finding')}" if findings > len(worst) else "") + " in the thread"
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([f"*{state}*: {command} {where}", *(s for s in said if s)])[:2900]}}]
    for finding in worst:
        blocks += request_button_blocks(request, finding)
    blocks.append(_context(tail))
    return "\n".join(text_lines), blocks[:50]


def detail(title: str, steps: list[dict], notes=(), seal: str = "") -> tuple[str, list[dict]]:
    """A request's detail, for its thread: the steps (or the plan), the notes, the audit seal."""
    title = escape(title)
    lines = [shorten_digests(line) for line in step_lines(steps)]
    shown = [escape(shorten_digests(n)) for n in notes if n]
    text = "\n".join([f"*{title}*", *lines, *shown, *([seal] if seal else [])])
    blocks: list[dict] = [{"type": "section", "text": {"type": "mrkdwn", "text": "\n".join([f"*{title}*", *lines])[:2900]}}]
    blocks += [_context(("" if n.startswith("Saved ") else "⚠️ ") + n) for n in shown[:20]]
    if seal:
        blocks.append(_context(seal))
    return text, blocks[:50]


def evidence_summary(request: CommandRequest, result: Result, stored: list[StoredObject], protection: Protection, bucket: str,
                     prefix: str) -> tuple[str, list[dict]]:
    """The top-level message of an evidence request: what was collected, where, and whether it is locked."""
    where = escape(place(request.options.get("account"), result.region))
    notes = f" {count(len(result.notes), 'note')} in the thread." if result.notes else ""
    text = (f"Evidence from {escape(result.target)} ({where}) collected for <@{request.user_id}>: {len(stored)} objects in "
            f"s3://{bucket}/{escape(prefix)}, {protection.describe(bucket)}.{notes}")
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":mag: *Evidence collected* from `{escape(result.target)}` ({where}) "
                                                               f"for <@{request.user_id}>: {len(stored)} objects"}},
    ]
    if not protection.locked:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f":warning: *Evidence is not write-protected*: bucket `{bucket}` has no Object Lock."}})
    blocks.append(_context(f"`s3://{bucket}/{escape(prefix)}` · {protection.describe(bucket)} · request `{request.id}` · "
                           f"each object and its digest in the thread{notes}"))
    return text, blocks


def evidence_detail(result: Result, stored: list[StoredObject], seal: str = "") -> tuple[str, list[dict]]:
    """The thread of an evidence request: each object, its size, its digest (short) and a link to it."""
    lines = [f"• {escape(o.name)} — {human_size(o.size)} — sha256 {short(o.sha256)} — {o.url}" for o in stored]
    notes = [f"⚠️ {escape(n)}" for n in result.notes]
    text = "\n".join([*lines, *notes, *([seal] if seal else [])])
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*<{o.url}|{escape(o.name)}>* · {human_size(o.size)} · sha256 `{short(o.sha256)}`"}}
              for o in stored]
    blocks += [_context(n) for n in notes]
    if seal:
        blocks.append(_context(seal))
    return text, blocks[:50]
