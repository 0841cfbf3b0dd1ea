"""The instance overview the Home tab shows, kept in Redis between refreshes.

Counting every account × region takes a worker minutes in a large organization, and the Home tab must open at
once: the bot shows what Redis holds and asks for a refresh when it is missing or older than FRESH_SECONDS. One
refresh runs at a time (REFRESHING, set only if absent); whoever opened the tab meanwhile is noted (WAITING) and
gets their Home published again when it ends (workers.home).
"""

from __future__ import annotations

import json
from datetime import datetime

from redis import Redis

from core.queues import enqueue_overview_refresh

OVERVIEW = "irbot:home:overview"
REFRESHING = "irbot:home:refreshing"
WAITING = "irbot:home:waiting"
FRESH_SECONDS = 600
# A refresh's longest run: past it, a worker that died mid-refresh no longer holds the next one back.
REFRESH_SECONDS = 900


def load(connection: Redis) -> dict | None:
    raw = connection.get(OVERVIEW)
    return json.loads(raw) if raw else None


def save(connection: Redis, overview: dict) -> None:
    connection.set(OVERVIEW, json.dumps(overview))


def age_seconds(overview: dict, now: datetime) -> float:
    """How old the overview is; infinitely so when its time can't be read."""
    try:
        return (now - datetime.fromisoformat(overview["at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return float("inf")


def ask_for_refresh(connection: Redis, user_id: str) -> None:
    """Note ``user_id`` for a publish once the overview is fresh, and queue a refresh unless one is on its way. Noted
    first: a refresh ending in between then either publishes for them or lets this one start another."""
    with connection.pipeline() as pipe:
        pipe.sadd(WAITING, user_id).expire(WAITING, REFRESH_SECONDS).execute()
    if connection.set(REFRESHING, 1, nx=True, ex=REFRESH_SECONDS):
        enqueue_overview_refresh(connection, REFRESH_SECONDS)


def refreshing(connection: Redis) -> bool:
    return bool(connection.exists(REFRESHING))


def end_refresh(connection: Redis) -> list[str]:
    """The refresh is over: the next may start. Returns who opened the tab while it ran."""
    with connection.pipeline() as pipe:
        waiting, _, _ = pipe.smembers(WAITING).delete(WAITING).delete(REFRESHING).execute()
    return sorted(u.decode() for u in waiting)
