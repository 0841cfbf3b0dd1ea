"""What a worker does when it starts, before its first job: catch up with the time no worker ran.

Approval windows are kept on Redis's clock and checked at every click, so nothing overdue can be
approved while no worker runs; but the cards still show buttons, and a request that was never
planned has no card at all. So a starting worker first expires what is overdue (its cards say so),
then tells each channel whose requesters heard "no worker is running" that work goes ahead now.
Several workers starting at once share the work: each waiting request is claimed by one of them.
"""

from __future__ import annotations

import json
from collections import defaultdict

from redis import Redis

from chat.messages import escape
from core import settings as settings_module
from core.approvals import EXPIRED
from core.logs import get_logger
from core.queues import WAITING_FOR_A_WORKER
from core.request import CommandRequest
from workers.context import JobContext, Runtime
from workers.running import expire_now

log = get_logger(__name__)


def catch_up(connection: Redis) -> None:
    """Expire what went overdue, then announce that work resumes. Never raises: the worker starts anyway."""
    try:
        rt = Runtime(settings_module.current("worker"), connection)
        expire_overdue(rt)
        announce_resumption(rt)
    except Exception as exc:  # noqa: BLE001 - a worker that can't catch up still works its queues
        log.error("catching up failed", error=type(exc).__name__)


def expire_overdue(rt: Runtime) -> list[str]:
    expired = []
    for pending in rt.book.overdue():
        decision = expire_now(JobContext(pending.request, rt), pending.id)
        if decision.ok:
            expired.append(pending.id)
    if expired:
        log.info("expired overdue requests", requests=expired)
    return expired


def announce_resumption(rt: Runtime) -> None:
    by_channel: dict[str, list[CommandRequest]] = defaultdict(list)
    for request_id, raw in rt.connection.hgetall(WAITING_FOR_A_WORKER).items():
        if not rt.connection.hdel(WAITING_FOR_A_WORKER, request_id):
            continue  # another worker claimed it
        request = CommandRequest.from_dict(json.loads(raw))
        pending = rt.book.get(request.id)
        if pending is not None and pending.state == EXPIRED:
            continue  # its card says it expired
        by_channel[request.channel_id].append(request)
    for channel, requests in by_channel.items():
        lines = [f"• `/ir {escape(r.command)} {escape(' '.join(r.targets))}` (request `{r.id}`) for <@{r.user_id}>"
                 for r in sorted(requests, key=lambda r: r.received_at)]
        rt.slack.post(channel, "A worker is running again, so what was queued while none ran goes ahead now:\n" + "\n".join(lines))
