"""image: snapshots read through the EBS direct APIs, streamed into the evidence bucket as raw disk images.

Nothing goes to local disk: blocks arrive many at once, are checked against their SHA-256, and are written
in order into a multipart upload (actions/blocks.py), hashed on the way; the image is kept only when every
byte of the volume was accounted for, with its digest, under Object Lock. Nothing in AWS changes, so it
runs without approval; EBS direct reads are billed per block, so the volume sizes are said first.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import boto3
from botocore.config import Config

from actions import blocks, disks
from actions.artefacts import Result, json_artefact
from actions.aws import call, client
from actions.context import RunContext
from actions.errors import ActionError
from actions.memory import Progress
from actions.registry import Risk, action
from actions.snapshot import snapshot as take_snapshots
from actions.steps import Outcome, StepLog
from actions.targets import instance_id
from actions.words import count

# At most this many images stream at once in one worker process, whatever asked for them: each holds a window
# of blocks and up to three upload parts in memory.
IMAGES_AT_ONCE = 4
# What /ir snapshot calls, for an instance this incident hasn't snapshotted yet (without its --copy-to-kms).
SNAPSHOT_PERMISSIONS = ("ec2:DescribeInstances", "ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DescribeSnapshots")
PERMISSIONS = (*blocks.PERMISSIONS, *disks.PERMISSIONS, *SNAPSHOT_PERMISSIONS)
_streaming = threading.BoundedSemaphore(IMAGES_AT_ONCE)
MAX_PARTS = 9000  # of S3's 10,000 per upload: the part size grows with the volume
LARGEST_OBJECT = 5 << 40  # S3's: a larger volume can't be one image
# A block is 512 KiB: a call that hasn't answered in 20 s is retried, a few times, rather than waited for a minute.
EBS_CLIENT = Config(read_timeout=20, retries={"mode": "standard", "max_attempts": 4})


@dataclass
class ImageProgress(Progress):
    """One image's progress, for the request's progress message."""

    name: str = ""
    state: str = "queued"
    sha256: str | None = None
    uri: str | None = None
    reason: str | None = None


@action("image", risk=Risk.READ, summary="Read snapshots into the evidence bucket as raw disk images (EBS direct APIs, each block checked).",
        permissions=PERMISSIONS, target="disk", many=True, card_state="imaged",
        queue="long", timeout_seconds=12 * 3600, parallel_targets=IMAGES_AT_ONCE, policy="disks")
def image(session: boto3.Session, target: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False) -> Result:
    result = Result("image", target, region)
    ec2 = client(session, "ec2", region)
    found = disks.disks_for(ec2, target, context.incident)
    if not found and instance_id(target):
        # No snapshot of this incident yet: taken exactly as /ir snapshot takes them (its steps are this request's too).
        taken = take_snapshots(session, target, region, context=context, steps=steps, dry_run=dry_run)
        result.facts["snapshots"] = taken.facts.get("snapshots", [])
        found = [] if dry_run else disks.disks_for(ec2, target, context.incident)
        if not found and not dry_run:
            raise ActionError(f"{target} has no snapshot this incident could image: see the snapshot steps above.")
    waiting = [d for d in found if disks.not_completed(d) or d.size_bytes > LARGEST_OBJECT]
    for disk in waiting:
        steps.add(f"image:{disk.snapshot_id}", f"Image {disk.describe()}", Outcome.FAILED, disks.not_completed(disk) or
                  f"{disk.size_gib} GiB is more than S3 holds in one object (5 TiB): use `/ir workstation` for this volume.")
    ready = [d for d in found if d not in waiting]
    if not ready:
        result.steps = steps.steps
        return result
    total = sum(d.size_bytes for d in ready)
    steps.add("size", "Size the reads", Outcome.PLANNED if dry_run else Outcome.DONE,
              f"{'; '.join(d.describe() for d in ready)}: {total >> 30} GiB in all. EBS direct reads are billed per block read "
              "(GetSnapshotBlock); blocks never written are not read, and are zeros in the image.")
    if dry_run:
        result.steps = steps.steps
        return result
    if context.open_sink is None:
        raise ActionError("No evidence bucket to write the images to: set IR_EVIDENCE_BUCKET for the worker.")
    ebs = client(session, "ebs", region, config=EBS_CLIENT.merge(Config(max_pool_connections=IMAGES_AT_ONCE * context.image_concurrency + 4)))
    lock = threading.Lock()
    progress = {d.snapshot_id: ImageProgress(expected=d.size_bytes, name=f"{d.snapshot_id} → {d.volume_id}.raw") for d in ready}

    def one(disk: disks.Disk) -> None:
        try:
            if not disk.incident:
                # irbot's policy lets it read only snapshots tagged for an incident (actions/scopes.py): stolen credentials
                # can't copy a disk out without leaving irbot's tag on it, where everyone can see it.
                call(ec2, "create_tags", Resources=[disk.snapshot_id], Tags=[{"Key": "irbot:incident", "Value": context.incident or "-"}])
            custody = _image(ebs, disk, region, context, progress[disk.snapshot_id])
        except ActionError as exc:
            with lock:
                steps.add(f"image:{disk.snapshot_id}", f"Image {disk.describe()}", Outcome.FAILED, str(exc))
            return
        with lock:
            result.facts.setdefault("images", []).append(custody)
            result.artefacts.append(json_artefact(f"{disk.volume_id}.raw.custody.json", f"Chain of custody of {disk.volume_id}.raw", custody))
            steps.add(f"image:{disk.snapshot_id}", f"Image {disk.describe()}", Outcome.DONE,
                      f"{custody['bytes']} bytes, {count(custody['blocks_read'], 'block')} read of {custody['block_size']} bytes each "
                      f"(each checked), sha256 {custody['sha256']}, {custody['mb_per_second']} MB/s, to {custody['s3']}")
        if context.audit:
            context.audit("image.custody", **custody)

    with ThreadPoolExecutor(max_workers=len(ready), thread_name_prefix="image") as pool:
        list(pool.map(one, ready))
    result.steps = steps.steps
    return result


def _image(ebs, disk: disks.Disk, region: str, context: RunContext, progress: ImageProgress) -> dict:
    """One snapshot, read whole into one evidence object; its chain of custody."""
    report = context.on_progress or (lambda p: None)
    with _streaming:
        progress.state, progress.started = "reading", time.monotonic()
        report(progress)
        custody = {"snapshot": disk.snapshot_id, "volume": disk.volume_id, "instance": disk.instance_id, "account": context.account,
                   "region": region, "size": disk.size_bytes, "requester": context.requester, "request": context.request_id,
                   "incident": context.incident, "read_with": "EBS direct APIs: ListSnapshotBlocks, GetSnapshotBlock (each block's SHA-256 checked)",
                   "started_at": _now()}
        listed = blocks.list_blocks(ebs, disk.snapshot_id)
        if listed.volume_bytes != disk.size_bytes:
            raise ActionError(f"{disk.snapshot_id} lists a {listed.volume_bytes >> 30} GiB volume where EC2 says {disk.size_gib} GiB: the image was not kept.")
        sink = context.open_sink(f"{disk.volume_id}.raw", min_part_size=-(-disk.size_bytes // MAX_PARTS))
        digest = hashlib.sha256()
        last = 0.0

        def write(data) -> None:
            nonlocal last
            digest.update(data)
            sink.write(data)
            progress.done += len(data)
            if time.monotonic() - last > 1.0:
                last = time.monotonic()
                report(progress)

        try:
            stats = blocks.read_volume(ebs, listed, write, concurrency=context.image_concurrency)
            if progress.done != disk.size_bytes:
                raise ActionError(f"{progress.done} of {disk.size_bytes} bytes of {disk.snapshot_id} were written: the image was not kept.")
            stored = sink.complete(digest.hexdigest())
        except BaseException as exc:
            sink.abort()
            progress.state, progress.reason = "failed", str(exc) if isinstance(exc, ActionError) else "irbot failed"
            report(progress)
            raise
    progress.state, progress.sha256, progress.uri = "complete", digest.hexdigest(), stored.get("uri")
    report(progress)
    seconds = max(time.monotonic() - progress.started, 1e-6)
    custody.update(ended_at=_now(), bytes=progress.done, block_size=stats.block_size, blocks_listed=len(listed.tokens),
                   blocks_read=stats.blocks_read, block_slots=disk.size_bytes // stats.block_size, sha256=digest.hexdigest(),
                   s3=stored.get("uri"), version_id=stored.get("version_id"), mb_per_second=round(progress.done / seconds / 1e6))
    return custody


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
