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

SEVERITIES = ("low", "medium", "high", "critical")
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


# An incident's one ID, everywhere (audit records, evidence keys, `irbot audit export`): the declared
# incident's IR-YYYYMMDD-NNN, or, for work in a channel where none was declared, that channel's ID.
DECLARED_ID = re.compile(r"IR-\d{8}-\d{3,}")
CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,20}")
WHICH_ID = "the declared incident's ID (IR-20260101-001, on its card) or, where none was declared, the channel ID (C0123ABCD)"


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

    def open_incidents(self) -> list[Incident]:
        """Every incident not closed, however many (the Home tab shows them)."""
        keys = [k for k in self.connection.scan_iter(incident_key("IR-*"), count=1000)]
        with self.connection.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            found = pipe.execute()
        incidents = [Incident(**{k.decode(): v.decode() for k, v in data.items()}) for data in found if data]
        return [i for i in incidents if i.status != "closed"]

    def for_channel(self, channel_id: str) -> Incident | None:
        found = self.connection.get(channel_key(channel_id))
        return self.get(found.decode()) if found else None


# Words a name shouldn't end on: "…-miner-on" reads as cut off.
DANGLING = frozenset({"a", "an", "and", "as", "at", "by", "for", "from", "in", "is", "of", "on", "or", "the", "to", "was", "with"})
SLUG_LENGTH = 40


def channel_name(incident: Incident) -> str:
    """ir-20261123-001-crypto-miner-on-web-1: the ID, then as many of the title's words as fit (Slack allows 80
    characters; 40 for the words keeps it readable). A word is what the title separates with spaces, so an ID such
    as i-1f2053948842324a1 is kept whole or left out, never cut; and the name doesn't end on a word like "is"."""
    words = [w for w in (re.sub(r"[^a-z0-9]+", "-", word).strip("-") for word in incident.title.lower().split()) if w]
    kept: list[str] = []
    for word in words:
        if len("-".join([*kept, word])) > SLUG_LENGTH:
            break
        kept.append(word)
    if len(kept) < len(words):  # cut short: end on a word that carries meaning
        while kept and kept[-1] in DANGLING:
            kept.pop()
    return "-".join([incident.id.lower(), *kept])


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

