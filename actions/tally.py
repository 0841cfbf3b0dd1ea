"""Counting in this process: how many times something happened (a request, a Slack retry, an AWS retry),
by name and labels.

It lives at the bottom of the layers so that AWS calls (here in actions) can count too. It knows
nothing of Redis: core.metrics takes the counts and adds them to the totals every process shares,
and `irbot serve` exposes those. Label values must come from a closed set (command names from the
registry, service names, fixed reasons), never from what a user typed: each value is a series.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

Key = tuple[str, tuple[tuple[str, str], ...]]

_lock = threading.Lock()
_counts: Counter[Key] = Counter()


def count(name: str, amount: float = 1, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    with _lock:
        _counts[key] += amount


def take() -> dict[Key, float]:
    """Everything counted since the last take; counting starts again from zero."""
    with _lock:
        taken = dict(_counts)
        _counts.clear()
    return taken


def give_back(taken: dict[Key, float]) -> None:
    """Counts that could not be stored: kept for the next take, so none is lost."""
    with _lock:
        _counts.update(taken)


def _start_afresh_in_a_child() -> None:
    # An RQ work horse is a fork of its worker: it must not store the worker's counts a second time,
    # and must not inherit a lock another thread held at the moment of the fork.
    global _lock, _counts
    _lock = threading.Lock()
    _counts = Counter()


os.register_at_fork(after_in_child=_start_afresh_in_a_child)
