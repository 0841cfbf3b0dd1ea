"""How `irbot demo` prints what people see in Slack: emoji as emoji, links by what they point at, a long
private answer by its first lines, and a redrawn message by what changed on it."""

from __future__ import annotations

import json
import re

EMOJI = {":lock:": "🔒", ":unlock:": "🔓", ":gear:": "⚙", ":white_check_mark:": "✅", ":x:": "❌", ":no_entry:": "⛔",
         ":heavy_multiplication_x:": "✖", ":alarm_clock:": "⏰", ":small_blue_diamond:": "🔹", ":ballot_box_with_check:": "☑",
         ":fast_forward:": "⏩", ":hourglass_flowing_sand:": "⏳", ":mag:": "🔍", ":hourglass:": "⌛", ":brain:": "🧠",
         ":electric_plug:": "🔌", ":arrow_down:": "⬇", ":large_blue_circle:": "🔵", ":large_yellow_circle:": "🟡",
         ":large_orange_circle:": "🟠", ":red_circle:": "🔴", ":white_circle:": "⚪"}
PRIVATE_LINES = 4
THREAD_LINES = 16  # a thread reply longer than this (every check of /ir prep) is shown by its first lines


def readable(text: str) -> str:
    """Emoji as Slack draws them (not inside `code`, where `sysupdate:x:0:0` stays as written); presigned links are long:
    the transcript shows where they point, not the signature."""
    parts = re.split(r"(`[^`\n]*`)", text)
    for index in range(0, len(parts), 2):
        for code, symbol in EMOJI.items():
            parts[index] = parts[index].replace(code, symbol)
    text = "".join(parts)
    return re.sub(r"https?://\S+?/(\S+?)\?\S+", lambda m: f"<link to {m.group(1).rsplit('/', 1)[-1]}>", text)


def folded(text: str) -> str:
    """A long answer only its asker sees, as the transcript shows it: its first lines and how many there are."""
    lines = text.splitlines()
    return text if len(lines) <= PRIVATE_LINES + 2 else "\n".join(lines[:PRIVATE_LINES] + [f"… ({len(lines)} lines in all, only for the asker)"])


def thread(text: str) -> str:
    """A long thread reply as the transcript shows it: its first lines (the worst item in full) and how many there are."""
    lines = text.splitlines()
    return text if len(lines) <= THREAD_LINES else "\n".join(lines[:3] + [f"… ({len(lines)} lines in all, in the thread)"])


def changed(before: str, after: str) -> list[str]:
    """The lines of a redrawn message that were not on it before."""
    seen = set(before.splitlines())
    return [line for line in after.splitlines() if line not in seen]


def redrawn(before: str, after: str) -> str:
    """A thread reply redrawn (a plan that became the steps): its first line, what changed, and how many lines stayed."""
    first, *rest = after.splitlines() or [""]
    seen = set(before.splitlines()[1:])
    kept = sum(1 for line in rest if line in seen)
    return "\n".join([first, *(line for line in rest if line not in seen), *([f"({kept} lines as before)"] if kept else [])])


def answer(body: str) -> dict:
    """The bot's HTTP answer to a command, as JSON (a plain body as its text)."""
    try:
        return json.loads(body) if body else {}
    except ValueError:
        return {"text": body}


def home(view: dict) -> str:
    """A Home tab as the transcript shows it: each part's heading and its first line (the tab's own title left out)."""
    lines, heading = [], None
    for block in view.get("blocks", [])[1:]:
        if block.get("type") == "header":
            heading = block["text"]["text"]
        elif heading is not None:
            text = (block.get("text") or {}).get("text") or " ".join(e.get("text", "") for e in block.get("elements", []))
            lines.append(f"{heading} — {readable(text.splitlines()[0] if text else '')}")
            heading = None
    return "\n".join(lines)
