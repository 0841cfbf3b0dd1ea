"""The findings irbot drew cards of lately, newest first, for the Home tab (findings.consumer notes each one)."""

from __future__ import annotations

import json
import time

from redis import Redis

RECENT = "irbot:findings:recent"  # card key → when it was last drawn
KEPT = 50


def note(connection: Redis, card_key: str, summary: dict) -> None:
    """Remember what ``card_key``'s finding says, as the newest; only the KEPT newest are kept."""
    with connection.pipeline() as pipe:
        pipe.hset(card_key, "summary", json.dumps(summary))
        pipe.zadd(RECENT, {card_key: time.time()})
        pipe.zremrangebyrank(RECENT, 0, -KEPT - 1)
        pipe.execute()


def latest(connection: Redis, n: int) -> list[dict]:
    """The ``n`` newest findings' summaries (a card whose record has expired is left out)."""
    keys = connection.zrevrange(RECENT, 0, n - 1)
    with connection.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hget(key, "summary")
        found = pipe.execute()
    return [json.loads(raw) for raw in found if raw]
