"""The Home tab's instance overview, counted by a worker: every account irbot may act in × its enabled regions.

The bot queues this (core.overview) when someone opens the tab and the overview is missing or old; once it is
stored, everyone who opened the tab meanwhile gets theirs drawn again.
"""

from __future__ import annotations

from datetime import datetime, timezone

from actions import aws
from actions.errors import ActionError
from actions.inventory import INVENTORY, count_instances
from chat.home import publish_home
from core import overview
from core.accounts import accounts_for
from core.logs import get_logger
from workers.context import runtime

log = get_logger(__name__)

# The member accounts' CloudTrail names who is behind each session: here nobody asked, irbot's Home tab did.
SESSION_PERSON = "irbot-home-overview"


def refresh_overview() -> dict:
    rt = runtime()
    now = datetime.now(timezone.utc)
    accounts = accounts_for(rt.settings)

    def enter(account: str):
        session = accounts.session(account, request_id="home-overview", person=SESSION_PERSON)
        return aws.declare(session, INVENTORY)

    try:
        try:
            found = count_instances(enter, accounts.allowed(), rt.settings.aws_region or accounts.region,
                                    concurrency=rt.settings.hunt_concurrency, now=now)
        except Exception as exc:  # noqa: BLE001 - fail closed: the tab says it, the next opening tries again
            log.error("instance overview failed", error=type(exc).__name__)
            found = {"at": now.isoformat(timespec="seconds"), "error": str(exc) if isinstance(exc, ActionError) else type(exc).__name__}
        overview.save(rt.connection, found)
    finally:
        waiting = overview.end_refresh(rt.connection)
    for user in waiting:
        publish_home(rt.slack, rt.connection, rt.book, user, refresh=False)
    log.info("instance overview stored", instances=found.get("total"), problems=found.get("problem_count", 0), republished=len(waiting))
    return {"instances": found.get("total"), "republished": len(waiting)}
