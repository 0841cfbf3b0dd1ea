"""Which snapshots a disk command works on: the one named, or those this incident took of an instance's volumes.

`/ir image` and `/ir workstation` take either. An instance names its volumes through the snapshots `/ir snapshot`
made of them (tagged irbot:incident and irbot:instance), the newest completed one per volume: a volume read
straight from a running suspect would be evidence of nothing in particular.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from actions.aws import call
from actions.errors import ActionError
from actions.targets import INSTANCE_ID, snapshot_id

GiB = 1 << 30
VOLUME_ID = re.compile(r"vol-(?:[0-9a-f]{8}|[0-9a-f]{17})")
PERMISSIONS = ("ec2:DescribeSnapshots",)


@dataclass(frozen=True)
class Disk:
    snapshot_id: str
    volume_id: str  # the volume the snapshot was taken of (irbot:volume when irbot tagged it); names the image
    size_gib: int
    state: str
    instance_id: str | None = None
    incident: str | None = None  # its irbot:incident tag: irbot's policy reads only snapshots so tagged (scopes.py)

    @property
    def size_bytes(self) -> int:
        return self.size_gib * GiB

    def describe(self) -> str:
        return f"{self.snapshot_id} of {self.volume_id} ({self.size_gib} GiB)"


def _disk(snapshot: dict, instance_id: str | None = None) -> Disk:
    tags = {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}
    # Tags are anybody's to write, and the volume names an evidence key: only a volume ID is taken from them. A snapshot
    # made through the EBS direct APIs names no real volume (AWS says vol-ffffffff): the snapshot names the image then.
    volume = next((v for v in (tags.get("irbot:volume"), snapshot.get("VolumeId")) if v and VOLUME_ID.fullmatch(v) and v != "vol-ffffffff"),
                  snapshot["SnapshotId"])
    instance_id = instance_id or (tags.get("irbot:instance") if INSTANCE_ID.fullmatch(tags.get("irbot:instance", "")) else None)
    return Disk(snapshot["SnapshotId"], volume, int(snapshot.get("VolumeSize") or 0), snapshot.get("State", ""), instance_id,
                tags.get("irbot:incident"))


def disks_for(ec2, target: str, incident: str) -> list[Disk]:
    """The snapshots ``target`` stands for: itself, or the newest snapshot per volume that this incident took of the
    instance (check not_completed). An empty list for an instance without any (the caller decides whether to snapshot it)."""
    region = ec2.meta.region_name
    if snapshot_id(target):
        try:
            found = call(ec2, "describe_snapshots", SnapshotIds=[target])["Snapshots"]
        except ActionError as exc:
            if exc.code in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
                raise ActionError(f"Snapshot {target} was not found in {region}: check the ID, the account and the region (--account, --region).") from exc
            raise
        if not found:
            raise ActionError(f"Snapshot {target} was not found in {region}: check the ID, the account and the region (--account, --region).")
        return [_disk(found[0])]
    found = call(ec2, "describe_snapshots", OwnerIds=["self"],
                 Filters=[{"Name": "tag:irbot:instance", "Values": [target]}, {"Name": "tag:irbot:incident", "Values": [incident or "-"]}])["Snapshots"]
    # The newest per volume, whatever its state: a volume whose snapshot is still pending is a line saying to wait
    # (not_completed), never silently left out of the instance's disks.
    newest: dict[str, dict] = {}
    for snapshot in sorted(found, key=lambda s: str(s.get("StartTime", ""))):
        if snapshot.get("State") != "error":
            newest[_disk(snapshot).volume_id] = snapshot
    return [_disk(s, target) for s in newest.values()]


def not_completed(disk: Disk) -> str | None:
    """Why ``disk`` can't be read yet, or None."""
    if disk.state != "completed":
        return f"{disk.snapshot_id} is {disk.state or 'in an unknown state'}, not completed: wait for it (`/ir status`), then ask again."
    return None
