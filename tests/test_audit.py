"""The audit trail: a hash chain in Redis, sealed write-once to S3, checked by `irbot audit verify`."""

from __future__ import annotations

import json
import re
import subprocess
import threading

import boto3
import redis

from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER
from tests.processes import IRBOT
from tests.test_approval import ask_to_stop, wait_card, wait_thread
from core.audit import LOG, AuditTrail, find_break, record_hash


def test_records_chain_each_to_the_one_before_and_many_writers_keep_it_intact(redis_conn):
    trail = AuditTrail(redis_conn)

    def write(n):
        for i in range(25):
            trail.append(incident=f"C{n}", actor=f"U{n}", action="test", target=str(i), params={"i": i}, outcome="ok")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = trail.records()
    assert [r["seq"] for r in records] == list(range(1, 101))
    assert find_break(records, source="redis") is None
    assert all(r["prev"] == p["hash"] for p, r in zip(records, records[1:]))
    assert len(trail.for_incident("C2")) == 25


def test_altering_removing_or_reordering_a_record_breaks_the_chain_there(redis_conn):
    trail = AuditTrail(redis_conn)
    for i in range(5):
        trail.append(incident="C1", actor="U1", action="test", params={"i": i}, outcome="ok")
    records = trail.records()

    altered = [dict(r) for r in records]
    altered[2]["outcome"] = "failed"
    assert (find_break(altered, source="redis").seq, "altered") == (3, "altered")

    rehashed = [dict(r) for r in records]
    rehashed[2]["outcome"] = "failed"
    rehashed[2]["hash"] = record_hash(rehashed[2])  # a careful forger recomputes the hash...
    broken = find_break(rehashed, source="redis")
    assert broken.seq == 4 and "link to the record before it is wrong" in broken.reason  # ...and the next link gives it away

    assert find_break(records[:2] + records[3:], source="redis").seq == 3
    assert find_break([records[0], records[2], records[1]] + records[3:], source="redis").seq == 2


def verify(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([IRBOT, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60)


def test_audit_verify_passes_after_real_work_and_names_the_record_after_tampering(run_irbot, world, slack, redis_url):
    irbot = run_irbot(IR_APPROVERS=SECOND_RESPONDER)
    irbot.command(f"collect {world['instance']}")
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(CHANNEL)))
    request_id, ts = ask_to_stop(irbot, slack, world["instance"])
    irbot.click(RESPONDER, "ir_approve", request_id)  # refused: self-approval
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
    wait_card(slack, ts, "Done")
    # The seal's head, posted in the request's thread (short, like every digest in a message), is the trail's head.
    head = re.search(r"chain head sha256 ([0-9a-f]{12})…", wait_thread(slack, ts, "Audit records")).group(1)

    ok = verify(irbot.env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("audit trail intact:") and "sealed batches" in ok.stdout

    # The channel's copy of the head matches the sealed chain.
    s3 = boto3.client("s3")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ir-evidence", Prefix="audit/")["Contents"])
    last_batch = s3.get_object(Bucket="ir-evidence", Key=keys[-1])["Body"].read().decode().splitlines()
    assert json.loads(last_batch[-1])["hash"].startswith(head)

    # One record altered in Redis.
    client = redis.Redis.from_url(redis_url)
    original = client.lindex(LOG, 4)
    record = json.loads(original)
    record["actor"] = "U0SOMEONE"
    client.lset(LOG, 4, json.dumps(record))
    broken = verify(irbot.env)
    assert broken.returncode == 1
    assert broken.stdout.startswith("audit trail BROKEN at record 5 (redis): its contents do not match its hash")
    client.lset(LOG, 4, original)
    assert verify(irbot.env).returncode == 0

    # One sealed batch altered: a new version written over it.
    body = s3.get_object(Bucket="ir-evidence", Key=keys[0])["Body"].read().decode().splitlines()
    forged = json.loads(body[1])
    forged["outcome"] = "nothing happened"
    body[1] = json.dumps(forged, sort_keys=True)
    s3.put_object(Bucket="ir-evidence", Key=keys[0], Body=("\n".join(body) + "\n").encode())
    broken = verify(irbot.env)
    assert broken.returncode == 1
    assert broken.stdout.startswith(f"audit trail BROKEN at record 2 ({keys[0]}): the sealed batch was written over (2 versions) "
                                    "and record 2 differs from the one sealed")

    # Records cut off the end of the log in Redis.
    client.rpop(LOG)
    broken = verify(irbot.env)
    assert broken.returncode == 1 and "records were removed" in broken.stdout


def test_audit_in_the_channel_and_export_show_the_incidents_trail(run_irbot, world, slack, tmp_path):
    irbot = run_irbot()
    irbot.command(f"collect {world['instance']}")
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(CHANNEL)))
    status, reply, elapsed = irbot.command("audit")
    # Only the asker sees it, unless asked to share it with the channel.
    assert status == 200 and elapsed < 3 and reply["response_type"] == "ephemeral"
    shared = irbot.command("audit --share")[1]
    assert shared["response_type"] == "in_channel" and shared["text"].splitlines()[0] == reply["text"].splitlines()[0]
    lines = reply["text"].splitlines()
    assert lines[0].startswith(f"*Audit trail of {CHANNEL}*")
    assert f"<@{RESPONDER}> request.queued {world['instance']}" in lines[1]
    assert any("evidence.stored" in line and "instance.json sha256" in line for line in lines)
    assert lines[-1].startswith("Chain head: record #")

    out = tmp_path / "trail.jsonl"
    result = subprocess.run([IRBOT, "audit", "export", "--incident", CHANNEL, "-o", str(out)], env=irbot.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["incident"] == CHANNEL for r in records)
    assert [r["action"] for r in records][:3] == ["request.queued", "job.started", "evidence.stored"]
    assert all(r["hash"] == record_hash(r) for r in records)


def export(env: dict, incident: str) -> subprocess.CompletedProcess:
    return subprocess.run([IRBOT, "audit", "export", "--incident", incident], env=env, capture_output=True, text=True, timeout=60)


def test_export_takes_the_declared_incidents_id_and_refuses_an_unknown_one(run_irbot, world, slack):
    from tests.test_incidents import declare

    irbot = run_irbot()
    incident = declare(irbot, slack)
    irbot.command(f"collect {world['instance']}", channel=incident["channel"])
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(incident["channel"])))
    irbot.settle()

    exported = export(irbot.env, incident["id"])
    assert exported.returncode == 0
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert records[0]["action"] == "incident.declared" and "evidence.stored" in [r["action"] for r in records]
    assert {r["incident"] for r in records} == {incident["id"]}
    assert exported.stderr == f"{len(records)} records of {incident['id']} exported\n"

    # The declared incident's channel: its records carry the incident's ID, and the refusal says which.
    by_channel = export(irbot.env, incident["channel"])
    assert by_channel.returncode == 1 and by_channel.stdout == ""
    assert by_channel.stderr == (f"irbot: {incident['channel']} is the channel of incident {incident['id']}, whose records carry its ID: "
                                 f"irbot audit export --incident {incident['id']}\n")

    which = "the declared incident's ID (IR-20260101-001, on its card) or, where none was declared, the channel ID (C0123ABCD)."
    for unknown in ("IR-19990101-001", "C0NOTHING1"):
        refused = export(irbot.env, unknown)
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr == f"irbot: the audit trail has no incident {unknown}: give {which}\n"
    malformed = export(irbot.env, "crypto-miner")
    assert malformed.returncode == 2 and "Traceback" not in malformed.stderr
    assert malformed.stderr == f"irbot: --incident 'crypto-miner' is not an incident ID: give {which}\n"


def test_redis_losing_its_records_is_never_intact_and_the_chain_continues_from_the_sealed_head(run_irbot, world, slack, redis_url):
    irbot = run_irbot()
    irbot.command(f"collect {world['instance']}")
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(CHANNEL)))
    irbot.settle()
    s3 = boto3.client("s3")
    sealed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ir-evidence", Prefix="audit/")["Contents"])
    last_sealed = json.loads(s3.get_object(Bucket="ir-evidence", Key=sealed[-1])["Body"].read().splitlines()[-1])

    redis.Redis.from_url(redis_url).flushall()  # Redis loses everything
    lost = verify(irbot.env)
    assert lost.returncode == 1, lost.stdout
    assert f"records up to {last_sealed['seq']} were sealed: records are missing from Redis since #1" in lost.stdout

    irbot.command(f"collect {world['instance']}")
    slack.wait_for(lambda s: sum("Evidence from" in m["text"] for m in s.messages(CHANNEL)) == 2)
    irbot.settle()
    first = AuditTrail(redis.Redis.from_url(redis_url)).records()[0]
    # The chain goes on from the sealed head: its number and its hash, and it says what happened.
    assert first["action"] == "audit.resumed" and first["seq"] == last_sealed["seq"] + 1 and first["prev"] == last_sealed["hash"]
    again = verify(irbot.env)
    assert again.returncode == 0, again.stdout
    assert f"the chain resumed from sealed record #{last_sealed['seq']}" in again.stdout
    # No sealed batch was written over, and none shares another's name.
    versions = s3.list_object_versions(Bucket="ir-evidence", Prefix="audit/")["Versions"]
    assert len({v["Key"] for v in versions}) == len(versions) > len(sealed)


def test_verify_covers_the_incident_indexes_the_views_read(run_irbot, world, slack, redis_url):
    """/ir audit, /ir report and `audit export` list an incident's records from an index beside the chain:
    an edit there changes what a reader sees, so verify checks it too."""
    from core.audit import incident_index

    irbot = run_irbot()
    irbot.command(f"collect {world['instance']}")
    slack.wait_for(lambda s: any("Evidence from" in m["text"] for m in s.messages(CHANNEL)))
    irbot.settle()
    client = redis.Redis.from_url(redis_url)
    index = incident_index(CHANNEL)
    assert verify(irbot.env).returncode == 0

    hidden = client.lindex(index, 3)
    client.lrem(index, 1, hidden)  # a record dropped from the incident's views
    broken = verify(irbot.env)
    assert broken.returncode == 1
    assert f"the index of incident {CHANNEL}, which /ir audit, /ir report and `audit export` read, leaves out its records #{int(hidden)}" in broken.stdout
    client.linsert(index, "BEFORE", client.lindex(index, 3), hidden)
    assert verify(irbot.env).returncode == 0, verify(irbot.env).stdout

    client.rpush(incident_index("IR-20990101-001"), hidden)  # someone else's record shown in another incident
    broken = verify(irbot.env)
    assert broken.returncode == 1 and f"lists #{int(hidden)}, not records of this incident" in broken.stdout
