"""Incidents as kept in Redis, and what their card shows, summarised from the audit trail.

Everything the card and the report say is read from the audit trail, so they can't disagree
with it. Declaring, closing and reporting are jobs (workers.incidents).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from redis import Redis

import actions
from core.request import Places

ENDINGS = {"request.approved", "request.denied", "request.cancelled", "request.expired", "request.failed"}


@dataclass
class Incident:
    id: str
    title: str
    severity: str
    commander: str
    channel_id: str = ""
    card_ts: str = ""
    status: str = "open"
    opened_at: str = ""
    closed_at: str = ""
    summary: str = ""
    finding: str = ""


def incident_key(incident_id: str) -> str:
    return f"irbot:incident:{incident_id}"


def channel_key(channel_id: str) -> str:
    return f"irbot:incident-channel:{channel_id}"


class IncidentBook:
    def __init__(self, connection: Redis):
        self.connection = connection

    def new_id(self) -> str:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        number = self.connection.incr(f"irbot:incident-seq:{day}")
        self.connection.expire(f"irbot:incident-seq:{day}", 3 * 24 * 3600)
        return f"IR-{day}-{number:03d}"

    def save(self, incident: Incident) -> None:
        self.connection.hset(incident_key(incident.id), mapping={k: v or "" for k, v in asdict(incident).items()})
        if incident.channel_id:
            self.connection.set(channel_key(incident.channel_id), incident.id)

    def get(self, incident_id: str) -> Incident | None:
        data = {k.decode(): v.decode() for k, v in self.connection.hgetall(incident_key(incident_id)).items()}
        return Incident(**data) if data else None

    def for_channel(self, channel_id: str) -> Incident | None:
        found = self.connection.get(channel_key(channel_id))
        return self.get(found.decode()) if found else None


def channel_name(incident: Incident) -> str:
    """ir-20261123-001-crypto-miner-on-web-1: the ID, then the title's first words (Slack allows 80 characters)."""
    words = re.sub(r"[^a-z0-9]+", " ", incident.title.lower()).split()
    slug = ""
    for word in words:
        if len(slug) + len(word) + 1 > 40:
            break
        slug = f"{slug}-{word}" if slug else word
    return f"{incident.id.lower()}-{slug}".rstrip("-")


def summarise(records: list[dict]) -> dict:
    """What the card shows, from the incident's audit records."""
    targets: dict[str, list[str]] = {}
    keys_revoked: list[str] = []
    requests: dict[str, dict] = {}
    evidence = 0
    places = Places()
    for r in records:
        params = r.get("params", {})
        request = params.get("request")
        places.note(request, params)
        named = places.named(r.get("target", ""), request)
        if request:
            entry = requests.setdefault(request, {"command": params.get("command"), "target": r.get("target"), "ended": False, "pending": False})
            if r["action"] == "request.pending":
                entry["pending"] = True
            if r["action"] in ENDINGS or r["action"] == "job.finished":
                entry["ended"] = True
        if r["action"] == "evidence.stored":
            evidence += 1
        spec = actions.get(params.get("command") or "")
        if r["action"] == "job.finished" and r.get("outcome") in ("ok", "finished") and spec and not spec.fan_out:
            # What the action declares it makes of its target; a fan-out action says so per target, below.
            target, state = named, spec.state_for(params.get("options") or {})
            if state and spec.target == "access-key":
                keys_revoked.append(target)
            elif state:
                targets.setdefault(target, [])
                if state not in targets[target]:
                    targets[target].append(state)
        custodian = actions.get(r["action"].removesuffix(".custody")) if r["action"].endswith(".custody") else None
        if custodian and r.get("outcome") == "complete":
            # A fan-out target's own record ("<action>.custody"): what the action makes of that target.
            targets.setdefault(named, []).append(custodian.state_for({}) or "done")
    waiting = [f"/ir {e['command']} {places.named(e['target'], request)}" for request, e in requests.items() if e["pending"] and not e["ended"]]
    return {"targets": targets, "keys_revoked": keys_revoked, "waiting": waiting, "evidence": evidence}

