"""The latest readiness result (/ir prep), kept in Redis for whoever shows it next (the Home tab).

Written by the worker when a readiness request ends, from what the action reported; a newer result replaces it.
The JSON: {"score", "passed", "total", "failed": [check names], "at", "request", "account", "evidence"}."""

from __future__ import annotations

import json

from redis import Redis

LATEST_KEY = "irbot:prep:latest"


def save_latest(connection: Redis, report: dict, *, request: str, evidence: str) -> dict:
    latest = {"score": report.get("score"), "passed": report.get("passed"), "total": report.get("total"),
              "failed": list(report.get("failed") or []), "at": report.get("at"), "request": request, "account": report.get("account"),
              "evidence": evidence}
    connection.set(LATEST_KEY, json.dumps(latest))
    return latest


def latest(connection: Redis) -> dict | None:
    raw = connection.get(LATEST_KEY)
    return json.loads(raw) if raw else None
