"""CloudTrail LookupEvents by access key, behind a small interface (moto does not implement it)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Protocol

import boto3
from botocore.config import Config

from actions.aws import call, client

# Fewer attempts than irbot's other calls: a failing lookup costs only the events of its region (the
# rest of a hunt goes on and says what couldn't be searched), and it is paced at 2 requests/s anyway.
LOOKUP_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})


class EventSource(Protocol):
    def lookup(self, session: boto3.Session, region: str, access_key_id: str, since: datetime) -> list[dict]:
        """The key's management events in ``region`` since ``since``, newest first:
        dicts with name, time, region, username, resources [(type, name)], event (the parsed CloudTrail record)."""


class CloudTrailEvents:
    """The real thing: one region per call, 50 events a page, at most 2 requests a second per region of an
    account (CloudTrail's own quota is per account and region, so accounts are paced apart)."""

    def __init__(self, requests_per_second: float = 2.0):
        self.interval = 1.0 / requests_per_second
        self._last: dict[str, float] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _wait_turn(self, region: str) -> None:
        with self._guard:
            lock = self._locks.setdefault(region, threading.Lock())
        with lock:
            pause = self._last.get(region, 0.0) + self.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._last[region] = time.monotonic()

    def lookup(self, session: boto3.Session, region: str, access_key_id: str, since: datetime) -> list[dict]:
        trail = client(session, "cloudtrail", region, config=LOOKUP_CONFIG)
        events, token = [], None
        pace = f"{getattr(session, 'irbot_account', '')}/{region}"
        while True:
            self._wait_turn(pace)
            params = {"LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": access_key_id}],
                      "StartTime": since, "MaxResults": 50}
            if token:
                params["NextToken"] = token
            page = call(trail, "lookup_events", **params)
            events.extend(normalise(e, region) for e in page.get("Events", []))
            token = page.get("NextToken")
            if not token:
                return events


def normalise(event: dict, region: str) -> dict:
    try:
        record = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        record = {}
    return {
        "name": event.get("EventName"),
        "time": event.get("EventTime"),
        "region": region,
        "username": event.get("Username"),
        "resources": [(r.get("ResourceType"), r.get("ResourceName")) for r in event.get("Resources", [])],
        "event": record,
    }
