"""Delivering the Slack outbox (chat.outbox) once Slack takes messages again."""

from __future__ import annotations

from core.logs import get_logger
from core.queues import schedule_outbox_delivery
from workers.context import runtime

log = get_logger(__name__)


def deliver_outbox() -> dict:
    """Deliver what waits, in order; if Slack still can't take it, try again in a few seconds."""
    rt = runtime()
    rt.connection.delete("irbot:outbox:scheduled")
    if rt.slack.deliver_waiting():
        log.info("outbox delivered")
        return {"ok": True, "waiting": 0}
    waiting = rt.slack.outbox.waiting()
    if waiting:
        schedule_outbox_delivery(rt.connection)
    return {"ok": False, "waiting": waiting}
