"""/ir image on moto's server: a snapshot's blocks become a raw image in the evidence bucket, zeros in its gaps,
each block checked against its SHA-256, the image kept only whole."""

from __future__ import annotations

import hashlib
import json
import os

import boto3
import pytest

from tests.helpers import CHANNEL, EBS_BLOCK, evidence_keys, make_world, raw_image_sha256, write_ebs_snapshot

# Blocks at the start, in the middle, at the very end of a 1 GiB volume; everything else never written.
LAST = (1 << 30) // EBS_BLOCK - 1
BLOCKS = {0: os.urandom(EBS_BLOCK), 1: b"\x01" * EBS_BLOCK, 7: os.urandom(EBS_BLOCK), 1000: os.urandom(EBS_BLOCK), LAST: os.urandom(EBS_BLOCK)}


@pytest.fixture
def ebs_proxy(aws):
    from standins.aws_proxy import AwsProxy

    proxy = AwsProxy(aws).start()
    yield proxy
    proxy.stop()


def ended(slack, request_word: str = "image", timeout: float = 240) -> dict:
    return slack.wait_for(lambda s: next((now for m in s.top_level(CHANNEL) for now in [s.current(CHANNEL, m["ts"])]
                                          if request_word in now["text"] and (now["text"].startswith(("Done", "Failed")) or " failed for " in now["text"])), None),
                          timeout=timeout)


def test_a_snapshot_becomes_a_byte_exact_raw_image_with_zeros_in_its_gaps_and_its_digest(run_irbot, slack, ebs_proxy, redis_url):
    make_world()
    snapshot = write_ebs_snapshot(BLOCKS)
    volume = boto3.client("ec2").describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["VolumeId"]
    ebs_proxy.corrupt(f"GET /snapshots/{snapshot}/blocks/7", times=1)  # one bad answer: fetched again, the image still exact
    irbot = run_irbot(AWS_ENDPOINT_URL_EBS=ebs_proxy.url, IR_IMAGE_CONCURRENCY="4")
    status, reply, elapsed = irbot.command(f"image {snapshot}")
    assert status == 200 and elapsed < 3

    message = ended(slack)
    assert message["text"].startswith("Done"), message["text"]
    [key] = [k for k in evidence_keys() if k.endswith(f"/{volume}.raw")]
    assert key.startswith(f"{CHANNEL}/123456789012/{snapshot}/")
    s3 = boto3.client("s3")
    expected = raw_image_sha256(BLOCKS)
    head = s3.head_object(Bucket="ir-evidence", Key=key)
    assert head["ContentLength"] == 1 << 30 and head["Metadata"]["sha256"] == expected
    assert head["ObjectLockMode"] == "COMPLIANCE"
    # Byte for byte: the written blocks where they belong, zeros between them.
    body, digest, offset = s3.get_object(Bucket="ir-evidence", Key=key)["Body"], hashlib.sha256(), 0
    while chunk := body.read(8 << 20):
        digest.update(chunk)
        for index, data in BLOCKS.items():
            start = index * EBS_BLOCK
            if offset <= start < offset + len(chunk):
                assert chunk[start - offset:start - offset + EBS_BLOCK] == data, index
        if offset == EBS_BLOCK * 8:
            assert chunk[: 64 << 10] == bytes(64 << 10)  # a gap
        offset += len(chunk)
    assert digest.hexdigest() == expected and offset == 1 << 30

    # The chain of custody: an object of its own and a record in the audit trail, naming what was read and what it made.
    [custody_key] = [k for k in evidence_keys() if k.endswith(f"/{volume}.raw.custody.json")]
    custody = json.loads(s3.get_object(Bucket="ir-evidence", Key=custody_key)["Body"].read())
    assert {k: custody[k] for k in ("snapshot", "volume", "account", "region", "size", "blocks_read", "block_size", "sha256")} == {
        "snapshot": snapshot, "volume": volume, "account": "123456789012", "region": "us-east-1", "size": 1 << 30,
        "blocks_read": len(BLOCKS), "block_size": EBS_BLOCK, "sha256": expected}
    from tests.test_incident_lifecycle import trail

    [record] = [r for r in trail(redis_url, CHANNEL) if r["action"] == "image.custody"]
    assert record["params"]["sha256"] == expected and record["params"]["snapshot"] == snapshot
    # The sizes were said before any block was read, and the thread shows the digest.
    thread = "\n".join(m["text"] for m in slack.thread(CHANNEL, message["ts"]))
    assert "1 GiB in all" in thread and "billed per block" in thread and expected[:12] in thread
    assert ebs_proxy.tally.seen.get(f"GET /snapshots/{snapshot}/blocks/7") == 2


def test_a_block_that_never_matches_its_checksum_fails_the_image_and_leaves_nothing(run_irbot, slack, ebs_proxy):
    make_world()
    snapshot = write_ebs_snapshot({0: os.urandom(EBS_BLOCK), 3: os.urandom(EBS_BLOCK)})
    ebs_proxy.corrupt(f"GET /snapshots/{snapshot}/blocks/3", times=10)
    irbot = run_irbot(AWS_ENDPOINT_URL_EBS=ebs_proxy.url)
    irbot.command(f"image {snapshot}")
    message = ended(slack)
    assert message["text"].startswith("Done, with failures") or message["text"].startswith("Failed"), message["text"]
    assert "block 3" in message["text"] and "SHA-256" in message["text"] and "not kept" in message["text"]
    assert not [k for k in evidence_keys() if k.endswith(".raw")]
    s3 = boto3.client("s3")
    assert s3.list_multipart_uploads(Bucket="ir-evidence").get("Uploads", []) == []


def test_bad_targets_get_a_sentence(aws, run_irbot, slack):
    make_world()
    irbot = run_irbot()
    _, reply, _ = irbot.command("image snap-<!channel>")
    assert "is not a snapshot or instance ID" in reply["text"] and "<!channel>" not in reply["text"]
    irbot.command("image snap-0123456789abcdef0")
    message = ended(slack, timeout=60)
    assert "snap-0123456789abcdef0 was not found in us-east-1" in message["text"]


def test_an_instance_and_a_snapshot_are_imaged_at_once_with_one_progress_message(run_irbot, slack, aws):
    """An instance stands for the snapshots this incident took of its volumes; a tag can't steer where its image goes."""
    world = make_world()
    first = {5: os.urandom(EBS_BLOCK)}
    second = {9: os.urandom(EBS_BLOCK)}
    of_instance = write_ebs_snapshot(first, tags={"irbot:incident": CHANNEL, "irbot:instance": world["instance"], "irbot:volume": "../../audit/x"})
    other = write_ebs_snapshot(second)
    irbot = run_irbot()
    irbot.command(f"image {world['instance']} {other}")
    message = ended(slack)
    assert message["text"].startswith("Done"), message["text"]
    s3 = boto3.client("s3")
    images = {k: s3.head_object(Bucket="ir-evidence", Key=k)["Metadata"]["sha256"] for k in evidence_keys() if k.endswith(".raw")}
    assert sorted(images.values()) == sorted([raw_image_sha256(first), raw_image_sha256(second)])
    volume = boto3.client("ec2").describe_snapshots(SnapshotIds=[of_instance])["Snapshots"][0]["VolumeId"]
    assert any(k.startswith(f"{CHANNEL}/123456789012/{world['instance']}/") and k.endswith(f"/{volume}.raw") for k in images), images
    assert not any("audit" in k.split("/", 1)[1] for k in images)
    progress = [m["text"] for m in slack.thread(CHANNEL, message["ts"]) if m["text"].startswith("Disk imaging")]
    assert len(progress) == 1 and "2 of 2 images ended" in progress[0], progress
