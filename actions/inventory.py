"""The organization's instances counted, for the Home tab: every account irbot may act in × every region it has enabled.

Only counts and the few newest launches are kept, so 10,000 instances across 60 accounts cost a few kilobytes.
A part that can't be read (an account irbot can't get into, a region that refuses) becomes one sentence in the
result and costs only its own count: the rest is counted all the same.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Callable, Iterable

import boto3

from actions.places import enabled_regions
from actions.aws import Declaration, client, paginate
from actions.errors import ActionError

INVENTORY = Declaration("the instance overview", frozenset({"ec2:DescribeRegions", "ec2:DescribeInstances"}))
# Terminated instances linger in DescribeInstances for an hour; they run nothing.
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]
RECENT = timedelta(hours=24)
NEWEST_KEPT = 5  # launches of the last 24 hours named one by one
IMAGES_KEPT = 25  # AMIs counted one by one; the rest are summed
PROBLEMS_KEPT = 10


def count_instances(enter: Callable[[str], boto3.Session], accounts: Iterable[str], region: str, *, concurrency: int,
                    now: datetime) -> dict:
    """The counts of live instances in ``accounts``: by account and region, by AMI, and launched since ``now`` - 24 h.
    ``enter`` gives a session in an account (under INVENTORY) or raises ActionError; ``region`` is where each account's
    enabled regions are asked. At most ``concurrency`` calls at once, whatever the number of accounts."""
    accounts = sorted(set(accounts))
    problems: list[str] = []
    sessions: dict[str, boto3.Session] = {}
    regions: dict[str, list[str]] = {}

    def open_account(account: str):
        try:
            session = enter(account)
            return account, session, enabled_regions(session, region), None
        except ActionError as exc:
            return account, None, [], str(exc)

    def count_region(task: tuple[str, str]):
        account, name = task
        try:
            reservations = paginate(client(sessions[account], "ec2", name), "describe_instances", "Reservations",
                                    Filters=[{"Name": "instance-state-name", "Values": LIVE_STATES}])
        except ActionError as exc:
            return account, name, None, str(exc)
        return account, name, [i for r in reservations for i in r.get("Instances", [])], None

    places: list[list] = []
    images: Counter = Counter()
    recent: list[dict] = []
    recent_count = 0
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for account, session, names, failure in pool.map(open_account, accounts):
            if failure is None:
                sessions[account], regions[account] = session, names
            else:
                problems.append(f"account {account}: {failure}")
        tasks = [(account, name) for account in sessions for name in regions[account]]
        for account, name, instances, failure in pool.map(count_region, tasks):
            if failure is not None:
                problems.append(f"{account} {name}: {failure}")
                continue
            if instances:
                places.append([account, name, len(instances)])
            for instance in instances:
                images[instance.get("ImageId") or "?"] += 1
                launched = instance.get("LaunchTime")
                if isinstance(launched, datetime) and launched >= now - RECENT:
                    recent_count += 1
                    recent.append({"id": instance.get("InstanceId", "?"), "account": account, "region": name,
                                   "type": instance.get("InstanceType", "?"), "launched": launched.isoformat(timespec="seconds")})
                    recent = sorted(recent, key=lambda r: r["launched"], reverse=True)[:NEWEST_KEPT]
    top = images.most_common(IMAGES_KEPT)
    return {
        "at": now.isoformat(timespec="seconds"),
        "accounts": len(sessions),
        "regions": len({name for names in regions.values() for name in names}),
        "total": sum(n for _, _, n in places),
        "places": sorted(places, key=lambda p: (-p[2], p[0], p[1])),
        "images": [[image, n] for image, n in top],
        "other_images": [len(images) - len(top), sum(images.values()) - sum(n for _, n in top)],
        "recent": recent_count,
        "newest": recent,
        "problems": sorted(problems)[:PROBLEMS_KEPT],
        "problem_count": len(problems),
    }
