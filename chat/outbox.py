"""The outbox: channel messages Slack could not take (5xx, timeouts, refused connections), kept in
Redis until it can, then delivered in the order they were written.

A post that waits here has no Slack ts yet; its caller gets a placeholder ("outbox:<id>") that
works wherever a ts does: an update of it waits behind the post, and once the post is delivered
the placeholder resolves to the real ts. While anything waits, every later post and update goes
behind it, so the channel never sees a result before the message it follows.
"""

from __future__ import annotations

import json
import uuid

from redis import Redis

from core.logs import get_logger

log = get_logger(__name__)

QUEUE = "irbot:outbox"  # list of pending deliveries, oldest first
TS = "irbot:outbox:ts"  # placeholder → the real ts, once its post is delivered
DRAIN_LOCK = "irbot:outbox:lock"
PLACEHOLDER = "outbox:"
KEEP_SECONDS = 30 * 24 * 3600


class Outbox:
    def __init__(self, connection: Redis):
        self.connection = connection

    def waiting(self) -> int:
        return self.connection.llen(QUEUE)

    def resolve(self, ts: str) -> str:
        """The real ts of a placeholder whose post was delivered; anything else as it is."""
        if ts and ts.startswith(PLACEHOLDER):
            real = self.connection.hget(TS, ts)
            return real.decode() if real else ts
        return ts

    def add(self, kind: str, channel: str, text: str, blocks: list[dict] | None, *, ts: str = "", response_url: str = "") -> str:
        placeholder = ts or f"{PLACEHOLDER}{uuid.uuid4().hex[:16]}"
        entry = {"kind": kind, "channel": channel, "text": text, "blocks": blocks, "ts": placeholder, "response_url": response_url}
        self.connection.rpush(QUEUE, json.dumps(entry))
        log.warning("slack unavailable: message kept in the outbox", kind=kind, channel=channel, waiting=self.waiting())
        return placeholder

    def drain(self, deliver) -> bool:
        """Deliver what waits, oldest first, with ``deliver(entry) -> ts``; stops at the first that fails
        again (it stays first). True when nothing is left. One drainer at a time."""
        if not self.connection.set(DRAIN_LOCK, 1, nx=True, ex=120):
            return False
        try:
            while True:
                raw = self.connection.lindex(QUEUE, 0)
                if raw is None:
                    return True
                entry = json.loads(raw)
                entry["ts"] = self.resolve(entry["ts"]) if entry["kind"] == "update" else entry["ts"]
                delivered = deliver(entry)  # raises when Slack still can't take it
                if entry["kind"] == "post" and delivered:
                    self.connection.hset(TS, entry["ts"], delivered)
                    self.connection.expire(TS, KEEP_SECONDS)
                self.connection.lpop(QUEUE)
        finally:
            self.connection.delete(DRAIN_LOCK)
