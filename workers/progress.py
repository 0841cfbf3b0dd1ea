"""The one progress message of a request whose action reports progress (/ir image): a row per piece of work,
redrawn in the thread of the request's message at most every few seconds, and at every change of state."""

from __future__ import annotations

import threading
import time
from typing import Callable

from chat import messages
from core.logs import get_logger

log = get_logger(__name__)
REDRAW_EVERY_SECONDS = 3


class ProgressMessage:
    def __init__(self, ctx, thread_ts: str, draw: Callable = messages.image_progress):
        self.ctx, self.thread_ts, self.draw = ctx, thread_ts, draw
        self.rows: dict[str, dict] = {}
        self.ts = ""
        self.drawn_at = 0.0
        self.lock = threading.Lock()
        self.drawing = threading.Lock()

    def __call__(self, progress) -> None:
        """An action's report of one piece (``name``, ``state``, ``done``, ``expected``, ``rate``); called from its threads."""
        with self.lock:
            before = self.rows.get(progress.name, {}).get("state")
            self.rows[progress.name] = {"state": progress.state, "done": progress.done, "expected": progress.expected,
                                        "rate": progress.rate, "sha256": getattr(progress, "sha256", None), "uri": getattr(progress, "uri", None),
                                        "reason": getattr(progress, "reason", None)}
            if before == progress.state and time.monotonic() - self.drawn_at < REDRAW_EVERY_SECONDS:
                return
            self.drawn_at = time.monotonic()
        # Slack is called outside the rows' lock, and a periodic redraw is skipped while another is under way: a
        # rate-limited channel must not hold the images back. A change of state waits its turn, so the last word is drawn.
        if self.drawing.acquire(blocking=before != progress.state):
            try:
                self._draw()
            finally:
                self.drawing.release()

    def _draw(self) -> None:
        request = self.ctx.request
        with self.lock:
            rows = {name: dict(row) for name, row in self.rows.items()}
        try:  # a view: the work goes on without it
            if self.ts:
                self.ctx.slack.update(request.channel_id, self.ts, *self.draw(request, rows))
            else:
                self.ts = self.ctx.slack.reply(request, *self.draw(request, self.rows), thread_ts=self.thread_ts) or ""
        except Exception as exc:  # noqa: BLE001
            log.error("progress redraw failed", error=type(exc).__name__)
