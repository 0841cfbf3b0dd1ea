"""The audit trail: one hash chain of records in Redis, sealed in batches to the evidence bucket.

Each record carries the SHA-256 of the one before it, so changing, removing or
reordering a record breaks the chain from there on; sealed batches are written
write-once, and every seal's chain head is posted in the channel, so a copy of
the head lives outside Redis and S3 too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import boto3
from redis import Redis
from redis.exceptions import RedisError, WatchError

from actions import aws
from actions.errors import ActionError

from actions.aws import Declaration, call

LOG = "irbot:audit:log"  # list of records, record N at index N-1-base
HEAD = "irbot:audit:head"  # hash: seq, hash of the newest record
BASE = "irbot:audit:base"  # hash: seq, hash of the record before the log's first (a sealed head the chain resumed from)
SEALED = "irbot:audit:sealed"  # seq of the newest sealed record
RESUME_LOCK = "irbot:audit:resume-lock"
SEAL_LOCK = "irbot:audit:seal-lock"
RESUME_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'hash', ARGV[2])
redis.call('HSET', KEYS[2], 'seq', ARGV[1], 'hash', ARGV[2])
redis.call('SET', KEYS[3], ARGV[1])
return 1
"""
GENESIS = "0" * 64
BATCH_PREFIX = "audit/"

# What sealing, resuming and checking the trail may call in the evidence bucket (see actions.aws).
AUDIT_RESUME = Declaration("the audit trail's resume", frozenset({"s3:ListBucket", "s3:GetObject"}))
AUDIT_SEAL = Declaration("the audit sealer", frozenset({"s3:GetBucketObjectLockConfiguration", "s3:PutObject", "s3:PutObjectRetention"}))
AUDIT_VERIFY = Declaration("irbot audit verify", frozenset({"s3:ListBucketVersions", "s3:GetObject", "s3:GetObjectVersion"}))


def incident_index(incident: str) -> str:
    return f"irbot:audit:incident:{incident}"


def canonical(record: dict) -> bytes:
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def record_hash(record: dict) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


@dataclass(frozen=True)
class Break:
    """Where a chain stops being intact, and why."""

    seq: int
    reason: str
    source: str  # "redis" or the sealed batch's key

    def __str__(self) -> str:
        return f"record {self.seq} ({self.source}): {self.reason}"


@dataclass(frozen=True)
class Seal:
    key: str
    first: int
    last: int
    head: str
    sha256: str
    url: str


class AuditUnavailable(RedisError):
    """The trail can't be written: Redis lost it and its sealed head can't be read. Nothing is recorded, so nothing runs."""


class AuditTrail:
    """``sealed_head`` reads the newest sealed record's (seq, hash) from the evidence bucket, or None
    when nothing is sealed: with it, a trail whose Redis lost its records continues from there."""

    def __init__(self, connection: Redis, sealed_head: Callable[[], tuple[int, str] | None] | None = None):
        self.connection = connection
        self.sealed_head = sealed_head

    def _resume_if_lost(self) -> None:
        """Redis holds no chain head: a new trail, or one whose records Redis lost. Never restart at 1 over
        sealed batches: continue from the newest sealed record, and say so in the chain itself."""
        if self.sealed_head is None or self.connection.exists(HEAD):
            return
        with self.connection.lock(RESUME_LOCK, timeout=60, blocking_timeout=30):
            if self.connection.exists(HEAD):
                return
            try:
                sealed = self.sealed_head()
            except ActionError as exc:
                # Starting again at 1 would write over the sealed chain's numbers: refuse instead.
                raise AuditUnavailable(f"Redis holds no audit records and the sealed ones can't be read: {exc}") from exc
            if sealed is None:
                return  # nothing sealed yet: a new trail starts at 1
            seq, digest = sealed
            # Only if still absent: a resumer whose lock ran out must not move a head another one set.
            if not self.connection.eval(RESUME_SCRIPT, 3, HEAD, BASE, SEALED, seq, digest):
                return
        self.append(incident="-", actor="irbot", action="audit.resumed", target=f"#{seq}",
                    params={"sealed_head": seq, "hash": digest,
                            "why": "Redis held no audit records; whatever was recorded after the sealed head was lost with them"},
                    outcome="resumed")

    def base(self) -> tuple[int, str]:
        """The record the log in Redis follows: (0, genesis) unless the chain resumed from a sealed head."""
        found = self.connection.hgetall(BASE)
        return int(found.get(b"seq", 0)), found.get(b"hash", GENESIS.encode()).decode()

    def append(self, *, incident: str, actor: str, action: str, target: str = "", params: dict | None = None, outcome: str = "") -> dict:
        """Add one record at the end of the chain; safe with any number of writers."""
        self._resume_if_lost()
        with self.connection.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(HEAD)
                    head = pipe.hgetall(HEAD)
                    seq = int(head.get(b"seq", 0)) + 1
                    record: dict[str, Any] = {
                        "seq": seq,
                        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        "incident": incident,
                        "actor": actor,
                        "action": action,
                        "target": target,
                        "params": params or {},
                        "outcome": outcome,
                        "prev": head.get(b"hash", GENESIS.encode()).decode(),
                    }
                    record["hash"] = record_hash(record)
                    pipe.multi()
                    pipe.rpush(LOG, json.dumps(record, sort_keys=True, ensure_ascii=False, default=str))
                    pipe.hset(HEAD, mapping={"seq": seq, "hash": record["hash"]})
                    pipe.rpush(incident_index(incident), seq)
                    pipe.execute()
                    return record
                except WatchError:
                    continue

    def head(self) -> tuple[int, str]:
        head = self.connection.hgetall(HEAD)
        return int(head.get(b"seq", 0)), head.get(b"hash", GENESIS.encode()).decode()

    def records(self, first: int | None = None, last: int = -1) -> list[dict]:
        """Records ``first``..``last`` (by seq, inclusive; default: all Redis holds; -1 is the newest)."""
        base = self.base()[0]
        start = max(0, (first or base + 1) - 1 - base)
        raw = self.connection.lrange(LOG, start, last if last == -1 else last - 1 - base)
        return [json.loads(r) for r in raw]

    def for_incident(self, incident: str) -> list[dict]:
        """The incident's records, as its card, /ir audit, the report and `audit export` show them: its own, and
        those of the work it adopted when it was declared in a channel that held work already (what its
        ``incident.declared`` record names: the channel's records before it, and the later ones of the same
        requests). Read from the chain itself, so what an incident adopted can't change without breaking it."""
        records = self._indexed(incident)
        adopted = records[0].get("params", {}).get("adopted") if records and records[0].get("action") == "incident.declared" else None
        if not adopted or adopted == incident:
            return records
        declared = records[0]["seq"]
        earlier = self._indexed(str(adopted))
        before = [r for r in earlier if r["seq"] < declared]
        requests = {r.get("params", {}).get("request") for r in before} - {None}
        after = [r for r in earlier if r["seq"] > declared and r.get("params", {}).get("request") in requests]
        return sorted(before + after + records, key=lambda r: r["seq"])

    def _indexed(self, incident: str) -> list[dict]:
        seqs = [int(s) for s in self.connection.lrange(incident_index(incident), 0, -1)]
        if not seqs:
            return []
        base = self.base()[0]
        seqs = [seq for seq in seqs if seq > base]
        pipe = self.connection.pipeline()
        for seq in seqs:
            pipe.lindex(LOG, seq - 1 - base)
        return [json.loads(r) for r in pipe.execute() if r is not None]

    def sealed_up_to(self) -> int:
        return int(self.connection.get(SEALED) or 0)

    def seal(self, store, *, incident: str = "-", actor: str = "worker") -> Seal | None:
        """Write the records not yet sealed as one write-once batch; None when there are none."""
        with self.connection.lock(SEAL_LOCK, timeout=120, blocking_timeout=30):
            first = self.sealed_up_to() + 1
            last, head = self.head()
            if last < first:
                return None
            batch = self.records(first, last)
            body = b"".join(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n" for r in batch)
            # The head's hash in the name: no batch can ever take an earlier batch's name, whatever happened to Redis.
            key = f"{BATCH_PREFIX}{first:010d}-{last:010d}-{head[:16]}.jsonl"
            stored = store.put(key, body, name=key, content_type="application/x-ndjson", description=f"audit records {first}-{last}")
            self.connection.set(SEALED, last)
        seal = Seal(key, first, last, head, stored.sha256, stored.url)
        # The seal is itself a record, so the chain says when and where each batch went.
        self.append(incident=incident, actor=actor, action="audit.sealed", target=key,
                    params={"first": first, "last": last, "head": head, "sha256": stored.sha256}, outcome="sealed")
        return seal


def find_break(records: Iterable[dict], *, source: str, prev: str = GENESIS, expected_seq: int = 1) -> Break | None:
    """The first record that doesn't recompute or doesn't follow the one before it."""
    for record in records:
        seq = record.get("seq")
        if seq != expected_seq:
            return Break(expected_seq, f"expected record {expected_seq} here but found record {seq}: a record was removed or reordered", source)
        if record.get("prev") != prev:
            return Break(seq, "its link to the record before it is wrong: a record before it was altered, removed or reordered", source)
        if record.get("hash") != record_hash(record):
            return Break(seq, "its contents do not match its hash: the record was altered", source)
        prev, expected_seq = record["hash"], expected_seq + 1
    return None


def verify(trail: AuditTrail, batches: list[tuple[str, bytes, str | None]]) -> list[Break]:
    """Every break found, first one first: in Redis, in the sealed batches, and between the two.

    ``batches`` are (key, body, sha256 metadata) in key order.
    """
    problems: list[Break] = []
    in_redis = trail.records()
    base_seq, base_hash = trail.base()
    found = find_break(in_redis, source="redis", prev=base_hash, expected_seq=base_seq + 1)
    if found:
        problems.append(found)
    # The head is written with every record: records cut off the end of the log show up here.
    head_seq, head_hash = trail.head()
    last = in_redis[-1] if in_redis else {"seq": base_seq, "hash": base_hash}
    if (last.get("seq"), last.get("hash")) != (head_seq, head_hash) and not found:
        problems.append(Break(min(head_seq, last.get("seq", 0) + 1) or 1,
                              f"the chain head says record {head_seq} comes last, but the log ends at record {last.get('seq')}: records were removed", "redis"))

    by_seq = {r.get("seq"): r for r in in_redis}
    sealed_hashes: dict[int, str] = {}
    prev, expected = GENESIS, 1
    for key, body, metadata_sha in batches:
        try:
            records = [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]
        except ValueError:
            problems.append(Break(expected, "the sealed batch is not readable JSON lines", key))
            break
        found = find_break(records, source=key, prev=prev, expected_seq=expected)
        if found:
            problems.append(found)
            break
        if metadata_sha and hashlib.sha256(body).hexdigest() != metadata_sha:
            problems.append(Break(records[0]["seq"] if records else expected, "the batch does not match its sha256 metadata", key))
            break
        for record in records:
            twin = by_seq.get(record["seq"])
            if twin is not None and twin.get("hash") != record["hash"]:
                problems.append(Break(record["seq"], "the sealed copy and the copy in Redis differ", key))
                break
        sealed_hashes.update((r["seq"], r["hash"]) for r in records)
        if records:
            prev, expected = records[-1]["hash"], records[-1]["seq"] + 1
    sealed_last = expected - 1
    if head_seq < sealed_last and not found:
        # Redis is behind what was sealed: it lost records (a flush, a restart without persistence).
        problems.append(Break(head_seq + 1, f"Redis holds the chain only up to record {head_seq}, but records up to {sealed_last} "
                                            f"were sealed: records are missing from Redis since #{head_seq + 1}", "redis"))
    if base_seq and batches and sealed_hashes.get(base_seq) != base_hash:
        problems.append(Break(base_seq + 1, f"the chain in Redis resumed from record {base_seq}, which no sealed batch holds as it says", "redis"))
    problems.extend(index_breaks(trail, in_redis))
    sealed = trail.sealed_up_to()
    if batches and expected - 1 < sealed and not any(b.source != "redis" for b in problems):
        problems.append(Break(expected, f"records up to {sealed} were sealed, but the batches end at record {expected - 1}: a batch is missing", "s3"))
    return sorted(problems, key=lambda b: b.seq)


def index_breaks(trail: AuditTrail, in_redis: list[dict]) -> list[Break]:
    """The per-incident indexes that /ir audit, /ir report and `irbot audit export` read must list exactly the
    chain's records of each incident, in order: an entry added, removed or moved there changes what a reader
    sees while the chain itself stays intact."""
    base = trail.base()[0]
    chain: dict[str, list[int]] = {}
    for record in in_redis:
        chain.setdefault(str(record.get("incident")), []).append(record.get("seq"))
    prefix = incident_index("")
    problems = []
    for key in sorted(trail.connection.scan_iter(prefix + "*")):
        incident = key.decode(errors="replace")[len(prefix):]
        listed = [int(v) if v.isdigit() else v.decode(errors="replace") for v in trail.connection.lrange(key, 0, -1)]
        listed = [s for s in listed if not (isinstance(s, int) and s <= base)]  # records lost before a resume
        wanted = chain.pop(incident, [])
        if listed == wanted:
            continue
        foreign = [s for s in listed if s not in wanted]
        left_out = [s for s in wanted if s not in listed]
        what = "; ".join(part for part in (
            f"lists {_numbers(foreign)}, not records of this incident" if foreign else "",
            f"leaves out its records {_numbers(left_out)}" if left_out else "",
            "lists its records out of order" if not foreign and not left_out else "") if part)
        first = min([s for s in foreign + left_out if isinstance(s, int)] or wanted[:1] or [base + 1])
        problems.append(Break(first, f"the index of incident {incident}, which /ir audit, /ir report and `audit export` read, {what}", "redis"))
    for incident, wanted in chain.items():
        problems.append(Break(wanted[0], f"incident {incident} has no index, so its records {_numbers(wanted)} are missing from its views", "redis"))
    return problems


def _numbers(seqs: list) -> str:
    shown = ", ".join(f"#{s}" for s in seqs[:5])
    return shown + (f" and {len(seqs) - 5} more" if len(seqs) > 5 else "")


def load_batches(s3, bucket: str) -> tuple[list[tuple[str, bytes, str | None]], list[Break]]:
    """The sealed batches in key order, each as first written; and a Break for any batch that was
    written over (a second version) or hidden (a delete marker)."""
    batches, problems = [], []
    versions: dict[str, list[dict]] = {}
    markers: set[str] = set()
    token: dict = {}
    while True:
        page = call(s3, "list_object_versions", Bucket=bucket, Prefix=BATCH_PREFIX, **token)
        for version in page.get("Versions", []):
            versions.setdefault(version["Key"], []).append(version)
        markers.update(m["Key"] for m in page.get("DeleteMarkers", []))
        if not page.get("IsTruncated"):
            break
        token = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page.get("NextVersionIdMarker")}
        token = {k: v for k, v in token.items() if v}
    for key in sorted(versions):
        first = int(key[len(BATCH_PREFIX):].split("-")[0])
        original = min(versions[key], key=lambda v: v["LastModified"])
        params = {"VersionId": original["VersionId"]} if original.get("VersionId") not in (None, "null") else {}
        obj = call(s3, "get_object", Bucket=bucket, Key=key, **params)
        body = obj["Body"].read()
        batches.append((key, body, obj.get("Metadata", {}).get("sha256")))
        if len(versions[key]) > 1:
            problems.append(_overwritten(s3, bucket, key, body, versions[key], first))
        if key in markers:
            problems.append(Break(first, "the sealed batch was deleted (a delete marker hides it)", key))
    return batches, problems


def _overwritten(s3, bucket: str, key: str, original: bytes, versions: list[dict], first: int) -> Break:
    """Name the first record a later version of a sealed batch changed."""
    latest = max(versions, key=lambda v: v["LastModified"])
    now = call(s3, "get_object", Bucket=bucket, Key=key, VersionId=latest["VersionId"])["Body"].read()
    sealed_lines, now_lines = original.splitlines(), now.splitlines()
    for index, line in enumerate(sealed_lines):
        if index >= len(now_lines) or now_lines[index] != line:
            seq = json.loads(line).get("seq", first + index)
            return Break(seq, f"the sealed batch was written over ({len(versions)} versions) and record {seq} differs from the one sealed", key)
    return Break(first, f"the sealed batch was written over ({len(versions)} versions)", key)


def resumptions(trail: AuditTrail) -> list[dict]:
    """The records saying the chain resumed from a sealed head after Redis lost its records."""
    return [r for r in trail.records() if r.get("action") == "audit.resumed"]


def sealed_head(s3, bucket: str) -> tuple[int, str] | None:
    """The newest sealed record's (seq, hash), read from the evidence bucket; None when nothing is sealed."""
    keys, token = [], {}
    while True:
        try:
            page = call(s3, "list_objects_v2", Bucket=bucket, Prefix=BATCH_PREFIX, **token)
        except ActionError as exc:
            if exc.code == "NoSuchBucket":
                return None  # nothing was ever sealed there; the work that needs the bucket says it is missing
            raise
        keys += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            break
        token = {"ContinuationToken": page["NextContinuationToken"]}
    ranges = [(int(parts[1]), key) for key in keys if len(parts := key[len(BATCH_PREFIX):].split(".")[0].split("-")) >= 2
              and parts[1].isdigit()]
    if not ranges:
        return None
    _, newest = max(ranges)
    lines = [line for line in call(s3, "get_object", Bucket=bucket, Key=newest)["Body"].read().splitlines() if line.strip()]
    last = json.loads(lines[-1])
    return int(last["seq"]), last["hash"]


def trail_for(settings, connection: Redis) -> AuditTrail:
    """The audit trail as configured: with an evidence bucket, it resumes from the newest sealed record when Redis lost its records."""
    if not settings.evidence_bucket:
        return AuditTrail(connection)

    def read() -> tuple[int, str] | None:
        s3 = aws.client(boto3.Session(), "s3", settings.aws_region or "us-east-1", declared=AUDIT_RESUME)
        return sealed_head(s3, settings.evidence_bucket)

    return AuditTrail(connection, read)
