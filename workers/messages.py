"""What the workers say in the channel: plain text for notifications, Block Kit for the channel."""

from __future__ import annotations

from actions.artefacts import Result
from workers.evidence import Protection, StoredObject
from workers.request import CommandRequest


def escape(text: str) -> str:
    """Slack mrkdwn control characters, so echoed input can't ping @channel or forge a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def evidence_saved(request: CommandRequest, result: Result, stored: list[StoredObject], protection: Protection, bucket: str, prefix: str) -> tuple[str, list[dict]]:
    head = (
        f"Evidence from {result.target} ({result.region}) collected for <@{request.user_id}>: "
        f"{len(stored)} objects in s3://{bucket}/{prefix}, {protection.describe(bucket)}."
    )
    lines = [f"• {o.name} — {human_size(o.size)} — sha256 {o.sha256} — {o.url}" for o in stored]
    notes = [f"⚠️ {escape(n)}" for n in result.notes]
    text = "\n".join([head, *lines, *notes])

    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":mag: *Evidence collected* from `{result.target}` ({result.region}) for <@{request.user_id}>"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"`s3://{bucket}/{prefix}` · {protection.describe(bucket)} · request `{request.id}`"}]},
    ]
    if not protection.locked:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f":warning: *Evidence is not write-protected*: bucket `{bucket}` has no Object Lock."}})
    for o in stored:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*<{o.url}|{o.name}>* · {human_size(o.size)}\nsha256 `{o.sha256}`"},
            }
        )
    for note in notes:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    return text, blocks[:50]


def failed(request: CommandRequest, sentence: str) -> tuple[str, list[dict]]:
    target = " ".join(request.targets)
    text = f"/ir {request.command} {target} failed for <@{request.user_id}>: {sentence}"
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":x: `/ir {request.command} {escape(target)}` failed: {escape(sentence)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"requested by <@{request.user_id}> · request `{request.id}`"}]},
    ]
    return text, blocks
