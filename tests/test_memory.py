"""Memory capture from a real sshd on loopback into moto's S3: every byte or a failure, never between."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta, timezone

import boto3
import paramiko
import pytest
import structlog
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from rq import SimpleWorker

from actions.ssh import TrustedKeys, fingerprint, trusted_from_console
from tests.helpers import CHANNEL, RESPONDER, SECOND_RESPONDER, evidence_keys, make_world
from core.approvals import ApprovalBook
from core.audit import AuditTrail
from core.evidence import STAGING, EvidenceStore
from workers.jobs import execute_request, prepare_request
from core.queues import SERIALIZER, queues
from core.request import CommandRequest

MiB = 1 << 20


@pytest.fixture
def memory_env(irbot_env, sshd, memory_source, monkeypatch):
    settings = {
        "IR_SSH_KEY": str(sshd.client_keys["ed25519"]),
        "IR_SSH_KNOWN_HOSTS": str(sshd.known_hosts),
        "IR_MEMORY_COMMAND": f"cat {memory_source}",
        "IR_MEMORY_SIZE_COMMAND": f"stat -c %s {memory_source}",
        "IR_MEMORY_STALL_SECONDS": "2",
        "IR_MEMORY_PART_MIB": "8",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    make_world()
    # As deployed (hub.yaml): every version written without a retention of its own gets COMPLIANCE.
    boto3.client("s3").put_object_lock_configuration(Bucket="ir-evidence", ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 1}}})
    return settings


def capture(redis_conn, *targets: str) -> dict:
    """/ir memory through the gate (approved by someone else), the batch run by a worker here."""
    request = CommandRequest(command="memory", targets=targets, options={}, user_id=RESPONDER, channel_id=CHANNEL, incident=CHANNEL)
    book = ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER})
    book.open(request)
    assert prepare_request(request.id)["state"] == "pending"
    book.approve(request.id, SECOND_RESPONDER)
    assert execute_request(request.id)["state"] == "running"
    SimpleWorker(queues(redis_conn), connection=redis_conn, serializer=SERIALIZER).work(burst=True, logging_level="ERROR")
    return {"request": request, "state": book.get(request.id)}


def images() -> list[str]:
    return [k for k in evidence_keys() if k.endswith(".lime")]


def nothing_left_over() -> bool:
    """No multipart upload anywhere in the bucket, and no stage (nor any version of one) under staging/."""
    s3 = boto3.client("s3")
    staged = s3.list_object_versions(Bucket="ir-evidence", Prefix=STAGING)
    return s3.list_multipart_uploads(Bucket="ir-evidence").get("Uploads", []) == [] and not staged.get("Versions") and not staged.get("DeleteMarkers")


def tomorrow() -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=1)


def custody_records(redis_conn) -> list[dict]:
    return [r for r in AuditTrail(redis_conn).records() if r["action"] == "memory.custody"]


@pytest.mark.parametrize("copy", ["one call", "in parts"])
def test_a_capture_lands_byte_for_byte_with_its_digest_across_server_side_rekeys(memory_env, sshd, memory_source, redis_conn, slack, monkeypatch, copy):
    if copy == "in parts":  # as an image over 5 GiB is copied from its stage
        monkeypatch.setattr("core.evidence.ONE_COPY_LIMIT", 8 * MiB)
    rekeys_before = sshd.rekeys()
    done = capture(redis_conn, sshd.target())
    assert done["state"].state == "finished"

    expected = memory_source.read_bytes()
    [key] = images()
    obj = boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)
    body = obj["Body"].read()
    assert body == expected
    assert obj["Metadata"]["sha256"] == hashlib.sha256(expected).hexdigest()
    assert obj["ObjectLockMode"] == "COMPLIANCE"
    # One version, digest and lock from its first moment, whichever way the copy from its stage went.
    versions = boto3.client("s3").list_object_versions(Bucket="ir-evidence", Prefix=key)
    [version] = [v for v in versions["Versions"] + versions.get("DeleteMarkers", []) if v["Key"] == key]  # not its .custody.json
    assert version["VersionId"] == obj["VersionId"]
    assert nothing_left_over()
    assert sshd.rekeys() >= rekeys_before + 2  # 40 MiB through a 16M RekeyLimit

    # Chain of custody, as evidence and in the audit trail.
    [custody_key] = [k for k in evidence_keys() if k.endswith(".custody.json")]
    custody = json.loads(boto3.client("s3").get_object(Bucket="ir-evidence", Key=custody_key)["Body"].read())
    host_key = paramiko.PKey.from_path(str(sshd.host_key))
    assert custody["host_key"].startswith(fingerprint(host_key))
    assert custody["bytes"] == len(expected) == custody["expected_bytes"]
    assert custody["sha256"] == obj["Metadata"]["sha256"] and custody["s3"].endswith(key) and custody["version_id"]
    assert custody["requester"] == RESPONDER and custody["approvers"] == [SECOND_RESPONDER]
    assert custody["command"] == memory_env["IR_MEMORY_COMMAND"] and custody["started_at"] and custody["ended_at"]
    [audited] = custody_records(redis_conn)
    assert audited["outcome"] == "complete" and audited["params"]["sha256"] == custody["sha256"]

    # The batch's progress, in the thread of the request's card, reports it with its digest (short: whole in the custody).
    [card] = slack.top_level(CHANNEL)
    progress = next(m for m in slack.thread(CHANNEL, card["ts"]) if m["text"].startswith("Memory capture"))
    assert "1 of 1 target ended" in progress["text"] and f"sha256 `{custody['sha256'][:12]}…`" in progress["text"]
    assert custody["sha256"] not in json.dumps([c.params for c in slack.calls])


@pytest.mark.parametrize("kind", ["ecdsa", "rsa"])
def test_ecdsa_and_rsa_keys_work_too(memory_env, sshd, memory_source, redis_conn, slack, monkeypatch, kind):
    monkeypatch.setenv("IR_SSH_KEY", str(sshd.client_keys[kind]))
    monkeypatch.setenv("IR_MEMORY_COMMAND", f"head -c {MiB} {memory_source}")
    monkeypatch.setenv("IR_MEMORY_SIZE_COMMAND", f"echo {MiB}")
    assert capture(redis_conn, sshd.target())["state"].state == "finished"
    [key] = images()
    assert boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)["Body"].read() == memory_source.read_bytes()[:MiB]


@pytest.mark.parametrize(
    "command, reason",
    [
        ("head -c 9437184 {src}; sleep 30", "stalled: no data for 2 s after 9437184 bytes"),
        ("head -c 9437184 {src}; kill -9 $PPID", "the connection dropped after"),
        ("head -c 9437184 {src}", "short stream: 9437184 of 41943040 bytes arrived"),
        ("head -c 9437184 {src}; exit 3", "the capture command exited 3 after 9437184 bytes"),
    ],
    ids=["stall", "drop", "short", "error-exit"],
)
def test_a_capture_that_stops_early_fails_and_leaves_no_upload(memory_env, sshd, memory_source, redis_conn, slack, monkeypatch, command, reason):
    monkeypatch.setenv("IR_MEMORY_COMMAND", command.format(src=memory_source))
    done = capture(redis_conn, sshd.target())
    assert done["state"].state == "failed"
    assert images() == [] and nothing_left_over()
    progress = next(m for m in slack.messages(CHANNEL) if m["text"].startswith("Memory capture"))
    final = slack.current(CHANNEL, progress["ts"])["text"]
    assert "failed" in final and reason in final
    assert custody_records(redis_conn)[0]["outcome"] == "failed"


def test_a_capture_whose_copy_from_its_stage_fails_leaves_no_stage(memory_env, sshd, memory_source, redis_conn, slack, monkeypatch):
    from botocore.client import BaseClient

    calling = BaseClient._make_api_call

    def refusing_copies(self, operation, params):
        if operation == "CopyObject":
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "CopyObject")
        return calling(self, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", refusing_copies)
    monkeypatch.setenv("IR_MEMORY_COMMAND", f"head -c {MiB} {memory_source}")
    monkeypatch.setenv("IR_MEMORY_SIZE_COMMAND", f"echo {MiB}")
    done = capture(redis_conn, sshd.target())
    assert done["state"].state == "failed"
    assert images() == [] and nothing_left_over()  # the stage was whole, and is gone with the capture
    final = slack.current(CHANNEL, next(m for m in slack.messages(CHANNEL) if m["text"].startswith("Memory capture"))["ts"])["text"]
    assert "AccessDenied" in final


def test_a_stage_s3_will_not_delete_is_left_to_expire_and_the_image_still_counts(aws):
    from actions import aws as aws_calls
    from core.evidence import EVIDENCE

    boto3.client("s3").create_bucket(Bucket="ir-evidence", ObjectLockEnabledForBucket=True)
    s3 = aws_calls.client(boto3.Session(), "s3", "us-east-1", declared=EVIDENCE)

    def refused(**_):  # as an IAM policy or a legal hold would answer
        return AWSResponse("", 403, {}, None), {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}

    s3.meta.events.register("before-call.s3.DeleteObject", refused)
    stream = EvidenceStore(s3, "ir-evidence").open_stream("incident/memory.lime", part_size=5 * MiB)
    stream.write(b"image")
    with structlog.testing.capture_logs() as logged:
        stored = stream.complete(hashlib.sha256(b"image").hexdigest())
    assert stored["size"] == 5 and stored["sha256"] == hashlib.sha256(b"image").hexdigest()
    head = s3.head_object(Bucket="ir-evidence", Key="incident/memory.lime")
    assert head["Metadata"]["sha256"] == stored["sha256"] and head["ObjectLockMode"] == "COMPLIANCE"
    [left] = s3.list_object_versions(Bucket="ir-evidence", Prefix=STAGING)["Versions"]
    assert left["Key"] == stream.stage and s3.head_object(Bucket="ir-evidence", Key=left["Key"])["ObjectLockMode"] == "GOVERNANCE"
    assert [e["key"] for e in logged if e["event"] == "stage left behind"] == [stream.stage]


def test_a_wrong_host_key_is_refused(memory_env, sshd, redis_conn, slack, tmp_path, monkeypatch):
    other = paramiko.Ed25519Key.from_private_key_file(str(sshd.client_keys["ed25519"]))  # any key but the server's
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {other.get_name()} {other.get_base64()}\n")
    monkeypatch.setenv("IR_SSH_KNOWN_HOSTS", str(wrong))
    done = capture(redis_conn, sshd.target())
    assert done["state"].state == "failed"
    final = slack.current(CHANNEL, next(m for m in slack.messages(CHANNEL) if m["text"].startswith("Memory capture"))["ts"])["text"]
    assert "is not the one irbot knows from IR_SSH_KNOWN_HOSTS; refusing to connect" in final
    assert images() == [] and nothing_left_over()


def test_an_unknown_host_is_refused_not_trusted_on_first_use(memory_env, sshd, redis_conn, slack):
    done = capture(redis_conn, sshd.target("127.0.0.3"))
    assert done["state"].state == "failed"
    final = slack.current(CHANNEL, next(m for m in slack.messages(CHANNEL) if m["text"].startswith("Memory capture"))["ts"])["text"]
    assert "irbot knows no host key for 127.0.0.3" in final


def test_host_keys_are_read_from_an_instances_console_output():
    key = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    console = (
        "cloud-init: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "256 SHA256:O3/X6gZLdvEKNUkJL1AtWCT1yM9nMIqZRBI4ZGYGPVk root@ip-10-0-1-5 (ED25519)\n"
        "cloud-init: -----END SSH HOST KEY FINGERPRINTS-----\n"
    )
    trusted = trusted_from_console(console)
    assert trusted.fingerprints == {"SHA256:O3/X6gZLdvEKNUkJL1AtWCT1yM9nMIqZRBI4ZGYGPVk"}
    assert trusted_from_console("Linux version 6.1 ... login:").fingerprints == frozenset()
    assert key is None or isinstance(trusted, TrustedKeys)


def test_three_targets_in_parallel_on_three_workers_one_failing(start_irbot, world, sshd, memory_source, slack):
    half = 20 << 20
    irbot = start_irbot(
        IR_SSH_KEY=str(sshd.client_keys["ed25519"]), IR_SSH_KNOWN_HOSTS=str(sshd.known_hosts),
        # A pause midway keeps each capture going long enough for the three to overlap.
        IR_MEMORY_COMMAND=f"head -c {half} {memory_source}; sleep 1; tail -c +{half + 1} {memory_source}",
        IR_MEMORY_SIZE_COMMAND=f"stat -c %s {memory_source}", IR_MEMORY_PART_MIB="8", IR_MEMORY_STALL_SECONDS="10",
    )
    irbot.add_workers(2)
    good, also_good, unknown = sshd.target("127.0.0.1"), sshd.target("127.0.0.2"), sshd.target("127.0.0.3")
    status, reply, elapsed = irbot.command(f"memory {good} {also_good} {unknown}")
    assert status == 200 and elapsed < 3 and "needs approval" in reply["text"]
    card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Approval needed" in m.get("text", "")), None))
    plan = slack.wait_for(lambda s: "\n".join(m["text"] for m in s.thread(CHANNEL, card["ts"])))
    assert plan.count("would do: ssh ") == 3 and "would do: ssh " not in card["text"]  # the plan is in the card's thread
    request_id = next(b for b in card["blocks"] if b["type"] == "actions")["elements"][0]["value"]
    irbot.click(SECOND_RESPONDER, "ir_approve", request_id)

    progress = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if m["text"].startswith("Memory capture")), None))
    final = slack.wait_for(lambda s: "3 of 3 targets ended" in s.current(CHANNEL, progress["ts"])["text"] and s.current(CHANNEL, progress["ts"])["text"], timeout=120)
    digest = hashlib.sha256(memory_source.read_bytes()).hexdigest()
    assert final.count(f"sha256 `{digest[:12]}…`") == 2
    assert "irbot knows no host key for 127.0.0.3" in final
    # The batch's last job ends the request once every target's job has ended.
    ended = slack.wait_for(lambda s: "Failed" in s.current(CHANNEL, card["ts"])["text"] and s.current(CHANNEL, card["ts"])["text"])
    assert "Capture" in ended and "irbot knows no host key for 127.0.0.3" in ended  # the failed step, on the card
    slack.wait_for(lambda s: any("2 of 3 captures complete" in m["text"] for m in s.thread(CHANNEL, card["ts"])))

    s3 = boto3.client("s3")
    custody = [json.loads(s3.get_object(Bucket="ir-evidence", Key=k)["Body"].read()) for k in evidence_keys() if k.endswith(".custody.json")]
    assert len(custody) == 2 and all(c["sha256"] == digest for c in custody)
    for key in images():
        assert s3.head_object(Bucket="ir-evidence", Key=key)["Metadata"]["sha256"] == digest
    # The two captures ran at the same time, on different workers.
    (start1, end1), (start2, end2) = [(datetime.fromisoformat(c["started_at"]), datetime.fromisoformat(c["ended_at"])) for c in custody]
    assert start1 < end2 and start2 < end1


def test_a_target_is_reached_through_the_bastion_when_one_is_set(memory_env, sshd, memory_source, redis_conn, slack, monkeypatch):
    monkeypatch.setenv("IR_SSH_BASTION", sshd.target("127.0.0.1"))
    monkeypatch.setenv("IR_MEMORY_COMMAND", f"head -c {MiB} {memory_source}")
    monkeypatch.setenv("IR_MEMORY_SIZE_COMMAND", f"echo {MiB}")
    tunnels_before = sshd.log.read_text(errors="replace").count("direct-tcpip")
    done = capture(redis_conn, sshd.target("127.0.0.2"))
    assert done["state"].state == "finished"
    [key] = images()
    assert boto3.client("s3").get_object(Bucket="ir-evidence", Key=key)["Body"].read() == memory_source.read_bytes()[:MiB]
    assert sshd.log.read_text(errors="replace").count("direct-tcpip") > tunnels_before  # it went through the bastion


def test_a_target_whose_worker_died_ends_the_batch_through_rqs_failure_callback(memory_env, sshd, redis_conn, slack):
    """RQ calls a job's on_failure callback with AbandonedJobError when its worker died; the batch still ends, once."""
    from rq.exceptions import AbandonedJobError
    from rq.job import Job

    from workers.batches import active_key, target_ended_badly

    request = CommandRequest(command="memory", targets=(sshd.target(),), options={}, user_id=RESPONDER, channel_id=CHANNEL, incident=CHANNEL)
    book = ApprovalBook(redis_conn, AuditTrail(redis_conn), responders={RESPONDER}, approvers={SECOND_RESPONDER})
    book.open(request)
    prepare_request(request.id)
    book.approve(request.id, SECOND_RESPONDER)
    assert execute_request(request.id)["state"] == "running"
    job = Job.fetch(f"target-{request.id}-0", connection=redis_conn, serializer=SERIALIZER)
    redis_conn.set(active_key(sshd.target()), request.id)  # the capture had started on the dead worker
    s3 = boto3.client("s3")  # and its stream was half-written, another's staged, a third's copy to its key cut short
    image = f"{CHANNEL}/123456789012/{sshd.target()}/20261126T000000Z-{request.id}/memory.lime"
    s3.create_multipart_upload(Bucket="ir-evidence", Key=f"{STAGING}{image}.0a1b", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=tomorrow())
    s3.put_object(Bucket="ir-evidence", Key=f"{STAGING}{image}.2c3d", Body=b"staged", ChecksumAlgorithm="SHA256",
                  ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=tomorrow())
    s3.create_multipart_upload(Bucket="ir-evidence", Key=image, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=tomorrow())
    target_ended_badly(job, redis_conn, AbandonedJobError, AbandonedJobError(), None)
    job.delete()  # the dead worker's job is gone; only the callback's ending is left to run
    SimpleWorker(queues(redis_conn), connection=redis_conn, serializer=SERIALIZER).work(burst=True, logging_level="ERROR")
    ended = book.get(request.id)
    assert ended.state == "failed" and "its worker died before it finished" in ended.steps[0]["detail"]
    assert redis_conn.get(active_key(sshd.target())) is None  # a stop of that host no longer waits for it
    assert nothing_left_over()  # the half-written images were thrown away
    assert f"To try again: `/ir memory {sshd.target()}`" in ended.note
    assert [r["action"] for r in AuditTrail(redis_conn).records()].count("job.finished") == 1
