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
from redis.exceptions import LockError

from core.logs import get_logger

log = get_logger(__name__)

QUEUE = "irbot:outbox"  # list of pending deliveries, oldest first
TS = "irbot:outbox:ts"  # placeholder → the real ts, once its post is delivered
DRAIN_LOCK = "irbot:outbox:lock"
PLACEHOLDER = "outbox:"
KEEP_SECONDS = 30 * 24 * 3600


LOCK_SECONDS = 60
# LPOP only if the first entry is still the one delivered.
POP_IF_FIRST = """
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then return redis.call('LPOP', KEYS[1]) end
return false
"""


class Outbox:
    def __init__(self, connection: Redis):
        self.connection = connection
        self._pop_if_first = connection.register_script(POP_IF_FIRST)

    def waiting(self) -> int:
        return self.connection.llen(QUEUE)

    def resolve(self, ts: str) -> str:
        """The real ts of a placeholder whose post was delivered; anything else as it is."""
        if ts and ts.startswith(PLACEHOLDER):
            real = self.connection.hget(TS, ts)
            return real.decode() if real else ts
        return ts

    def add(self, kind: str, channel: str, text: str, blocks: list[dict] | None, *, ts: str = "", response_url: str = "",
            thread_ts: str = "") -> str:
        placeholder = ts or f"{PLACEHOLDER}{uuid.uuid4().hex[:16]}"
        entry = {"kind": kind, "channel": channel, "text": text, "blocks": blocks, "ts": placeholder, "response_url": response_url,
                 "thread_ts": thread_ts}
        self.connection.rpush(QUEUE, json.dumps(entry))
        log.warning("slack unavailable: message kept in the outbox", kind=kind, channel=channel, waiting=self.waiting())
        return placeholder

    def drain(self, deliver) -> bool:
        """Deliver what waits, oldest first, with ``deliver(entry) -> ts``; stops at the first that fails
        again (it stays first). True when nothing is left. One drainer at a time: the lock is its own
        (a token), renewed with every message, and released only by its holder."""
        lock = self.connection.lock(DRAIN_LOCK, timeout=LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            return False
        try:
            while True:
                raw = self.connection.lindex(QUEUE, 0)
                if raw is None:
                    return True
                entry = json.loads(raw)
                entry["ts"] = self.resolve(entry["ts"]) if entry["kind"] == "update" else entry["ts"]
                entry["thread_ts"] = self.resolve(entry.get("thread_ts") or "")  # a reply in the thread of a post that waited
                delivered = deliver(entry)  # raises when Slack still can't take it
                if entry["kind"] == "post" and delivered:
                    self.connection.hset(TS, entry["ts"], delivered)
                    self.connection.expire(TS, KEEP_SECONDS)
                # Take off exactly what was delivered, and hold the lock for the next one.
                self._pop_if_first(keys=[QUEUE], args=[raw])
                lock.extend(LOCK_SECONDS, replace_ttl=True)
        finally:
            try:
                lock.release()
            except LockError:
                pass  # it expired while Slack was slow: someone else may hold it now, and keeps it
