"""workstation: the incident's disks on the forensic workstation (IR_WORKSTATION_INSTANCE), to be read there, mounted read-only.

For each snapshot a target stands for (actions.disks), a volume in the workstation's Availability Zone, tagged as
irbot's as it is made (irbot:purpose=workstation: irbot's policy lets it attach, detach and delete only such volumes,
and write that tag only at creation, see actions.scopes), attached at a free device name; the channel is given the
commands that mount it read-only. `--detach` detaches and deletes those volumes: never a snapshot, never a volume
irbot didn't make.

IR_WORKSTATION_INSTANCE holds an instance ID, which names an instance in the account and region the request acts in,
or an instance ARN, which names its own. EBS attaches a volume only to an instance in the volume's own account and
Availability Zone, and makes it only from a snapshot in its own region, so a workstation elsewhere is refused.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import boto3

from actions import disks
from actions.artefacts import Result
from actions.aws import call, client, paginate
from actions.changes import change
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import NOT_FOUND_CODES, describe_instance
from actions.registry import Option, Risk, action
from actions.scopes import PURPOSE_TAG, ROLE_TAG, WORKSTATION_PURPOSE
from actions.snapshot import KMS_THROUGH_EC2
from actions.steps import Outcome, StepLog
from actions.targets import snapshot_id

PERMISSIONS = (*disks.PERMISSIONS, "ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:CreateVolume", "ec2:CreateTags",
               "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume")
# The names AWS recommends for EBS volumes on Linux, past the ones an instance is launched with.
DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnop")
WORKSTATION_ARN = re.compile(r"arn:[a-z-]+:ec2:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):instance/(?P<instance>i-[0-9a-f]+)")
GONE = ("InvalidVolume.NotFound",)
NITRO_NOTE = ("The mount commands name the first partition (/dev/sdX1); a volume without a partition table is /dev/sdX itself. "
              "On Nitro instances the device is /dev/nvmeXn1 instead: `lsblk -o NAME,SERIAL` finds it (its serial is the volume ID "
              "without the dash).")


@dataclass(frozen=True)
class Waits:
    seconds: float  # for each wait: a volume made, attached, detached, deleted
    poll: float


@action("workstation", risk=Risk.CHANGE, summary="Attach volumes made from the incident's snapshots to the forensic workstation, to mount read-only there.",
        permissions=PERMISSIONS, target="disk", many=True,
        extra_options=(Option("--detach", says="DETACH and DELETE the volumes made for the workstation (never the snapshots)"),),
        card_state=lambda options: "off the workstation" if options.get("detach") else "on the workstation",
        # A snapshot encrypted with a customer key gives its volume that key: EC2 uses it for irbot, as for snapshot copies.
        grants=(KMS_THROUGH_EC2,), timeout_seconds=30 * 60, policy="disks")
def workstation(session: boto3.Session, target: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
                detach: bool = False, wait_seconds: float = 300, poll_seconds: float = 2) -> Result:
    ec2 = client(session, "ec2", region)
    station_id = workstation_id(context.workstation, context.account, region)
    result = Result("workstation", target, region)
    waits = Waits(wait_seconds, poll_seconds)
    if detach:
        _take_away(ec2, target, station_id, context, steps, dry_run, waits)
    else:
        station = _running_workstation(ec2, station_id, context.account, region)
        found = disks.disks_for(ec2, target, context.incident)
        if not found:
            raise ActionError(f"This incident has no completed snapshot of {target}: run `/ir snapshot {target}` first, then ask again.")
        for disk in found:
            attached = _bring(ec2, disk, station, context, steps, dry_run, waits)
            if attached:
                result.facts.setdefault("volumes", []).append(attached)
                result.notes.append(mount_note(attached["volume_id"], attached["device"], disk.snapshot_id))
        if result.facts.get("volumes"):
            result.notes.append(NITRO_NOTE)
    result.steps = steps.steps
    return result


def workstation_id(setting: str | None, account: str, region: str) -> str:
    """The workstation's instance ID, when it can take volumes made in ``account`` and ``region``; else a sentence why not."""
    if not setting:
        raise ActionError("No forensic workstation is set: set IR_WORKSTATION_INSTANCE to its instance ID (or ARN) and restart irbot's workers.")
    named = WORKSTATION_ARN.fullmatch(setting)
    if not named:
        return setting  # an ID: the account and region this request acts in
    if named["region"] != region or (account and named["account"] != account):
        raise ActionError(
            f"The forensic workstation {named['instance']} is in {named['account']}, {named['region']}, and this request acts in "
            f"{account or 'another account'}, {region}: EBS attaches a volume only in its own account and Availability Zone, made from a "
            f"snapshot of its own region. Share or copy the snapshot to {named['account']}, {named['region']} and ask there "
            f"(`--account {named['account']} --region {named['region']}`).")
    return named["instance"]


def _running_workstation(ec2, instance_id: str, account: str, region: str) -> dict:
    """The workstation, when volumes can be attached to it now."""
    try:
        _, station = describe_instance(ec2, instance_id)
    except ActionError as exc:
        if exc.code not in NOT_FOUND_CODES:
            raise
        raise ActionError(f"The forensic workstation {instance_id} (IR_WORKSTATION_INSTANCE) was not found in {account or 'this account'}, "
                          f"{region}: check the setting, or give the workstation's instance ARN.") from None
    state = station.get("State", {}).get("Name", "unknown")
    if state != "running":
        raise ActionError(f"The forensic workstation {instance_id} is {state}, not running: start it, then ask again.")
    if _tags(station).get(ROLE_TAG) != WORKSTATION_PURPOSE:
        # The policy attaches only to an instance so tagged (actions.scopes); said now, before any volume is made for nothing.
        raise ActionError(f"The forensic workstation {instance_id} is not tagged {ROLE_TAG}={WORKSTATION_PURPOSE}, which irbot's policy "
                          f"needs to attach volumes to it. Whoever runs the workstation tags it (irbot can't), then ask again.")
    return station


def _bring(ec2, disk: disks.Disk, station: dict, context: RunContext, steps: StepLog, dry_run: bool, waits: Waits) -> dict | None:
    """One snapshot's volume attached to the workstation: {volume_id, snapshot_id, device}, or None if it isn't (yet)."""
    station_id, zone = station["InstanceId"], station["Placement"]["AvailabilityZone"]
    volume: dict = {}  # the volume once found or made

    def made_earlier() -> str | None:
        # By its tags, not the request's ID: a rerun, or a later request for the same snapshot, finds it and makes no more.
        found = _volumes(ec2, context.incident, station_id, {"irbot:snapshot": disk.snapshot_id}, zone=zone)
        found.sort(key=lambda v: (_attachment(v, station_id) is None, str(v.get("CreateTime", ""))))
        volume.update(found[0] if found else {})
        return f"{volume['VolumeId']}, made earlier" if volume else None

    def make() -> str:
        tags = {PURPOSE_TAG: WORKSTATION_PURPOSE, "irbot:incident": context.incident or "-", "irbot:snapshot": disk.snapshot_id,
                "irbot:instance": disk.instance_id, "irbot:workstation": station_id, "irbot:request": context.request_id,
                "irbot:requester": context.requester, "Name": f"irbot {context.incident} {disk.snapshot_id}"}
        volume.update(call(ec2, "create_volume", SnapshotId=disk.snapshot_id, AvailabilityZone=zone,
                           TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v]}]))
        return f"{volume['VolumeId']} in {zone}"

    outcome = change(steps, f"volume:{disk.snapshot_id}", f"Make a volume from {disk.snapshot_id}", dry_run=dry_run,
                     plan=f"{disk.size_gib} GiB in {zone}, tagged for this incident", impossible=lambda: disks.not_completed(disk),
                     already=made_earlier, do=make)
    if outcome is Outcome.FAILED:
        return None
    device: list[str] = []

    def attached() -> str | None:
        now = _volume(ec2, volume["VolumeId"]) if volume else None
        elsewhere = (now or {}).get("Attachments") and _attachment(now, station_id) is None
        if elsewhere:
            raise ActionError(f"{volume['VolumeId']} is attached to {now['Attachments'][0].get('InstanceId')}, not the workstation: "
                              f"`--detach` takes it away; then ask again.")
        done = _attachment(now, station_id, "attached") if now else None
        device[:] = [done["Device"]] if done else []
        return f"at {done['Device']}" if done else None

    def attach() -> str:
        volume_id = volume["VolumeId"]
        now = _wait(ec2, volume_id, lambda v: v is not None and v["State"] in ("available", "in-use"), "become available", waits)
        started = _attachment(now, station_id)  # an earlier run's attach, still going
        device[:] = [started["Device"] if started else _attach_at_a_free_name(ec2, volume_id, station_id)]
        _wait(ec2, volume_id, lambda v: _attachment(v, station_id, "attached") is not None, "attach", waits)
        return f"{volume_id} at {device[0]}"

    title = f"Attach {volume['VolumeId'] if volume else 'it'} to the workstation {station_id}"
    # The plan names the first free device now; the run looks again, as others may have taken it by then.
    plan = f"at the first free device name ({next(iter(_free_names(ec2, station_id)), 'none left')})" if dry_run else ""
    outcome = change(steps, f"attach:{disk.snapshot_id}", title, dry_run=dry_run, plan=plan, already=attached, do=attach)
    if outcome not in (Outcome.DONE, Outcome.ALREADY):
        return None
    return {"volume_id": volume["VolumeId"], "snapshot_id": disk.snapshot_id, "device": device[0]}


def mount_note(volume_id: str, device: str, snapshot: str) -> str:
    """How to mount one volume read-only: the journal is never replayed (ext4 noload, XFS norecovery), so nothing is written
    to the copy; XFS's nouuid, as the copy of a disk made from the workstation's own image has the workstation's UUID."""
    where = f"/mnt/{volume_id}"
    make = f"sudo mkdir -p {where} && sudo mount -o"
    return (f"{volume_id} (from {snapshot}) is {device}. ext4: `{make} ro,noload {device}1 {where}`; "
            f"XFS: `{make} ro,norecovery,nouuid {device}1 {where}`")


def _attach_at_a_free_name(ec2, volume_id: str, station_id: str) -> str:
    """Attach at the first device name the workstation doesn't use. Another attach can take that name between the look and
    the call (AWS then refuses it, InvalidParameterValue); the next free name is tried, until none is left."""
    tried: set[str] = set()
    refusal: ActionError | None = None
    while True:
        free = [name for name in _free_names(ec2, station_id) if name not in tried]
        if not free and refusal:
            raise refusal  # AWS's own sentence: refused at every name, so something else than a taken name is wrong
        if not free:
            raise ActionError(f"The workstation {station_id} has no free device name from {DEVICES[0]} to {DEVICES[-1]}: "
                              f"detach volumes it no longer needs (`/ir workstation <snapshot-id> --detach`), then ask again.")
        try:
            call(ec2, "attach_volume", VolumeId=volume_id, InstanceId=station_id, Device=free[0])
            return free[0]
        except ActionError as exc:
            if exc.code != "InvalidParameterValue":
                raise
            tried.add(free[0])
            refusal = exc


def _free_names(ec2, station_id: str) -> list[str]:
    """The device names of DEVICES the workstation has no volume at, attaching ones included (/dev/sdf and /dev/xvdf are one)."""
    _, station = describe_instance(ec2, station_id)
    names = {b["DeviceName"] for b in station.get("BlockDeviceMappings", [])}
    names |= {a["Device"] for v in paginate(ec2, "describe_volumes", "Volumes", Filters=[{"Name": "attachment.instance-id", "Values": [station_id]}])
              for a in v.get("Attachments", []) if a.get("InstanceId") == station_id}
    taken = {_letter(name) for name in names}
    return [name for name in DEVICES if _letter(name) not in taken]


def _letter(device: str) -> str:
    """/dev/sdf, /dev/xvdf, xvdf1 → f: the names Linux and EC2 treat as one device."""
    found = re.fullmatch(r"(?:/dev/)?(?:sd|xvd)([a-z]+)\d*", device)
    return found.group(1) if found else device


def _take_away(ec2, target: str, station_id: str, context: RunContext, steps: StepLog, dry_run: bool, waits: Waits) -> None:
    """--detach: the volumes irbot made of ``target`` for this incident and this workstation, detached and deleted. Found by
    their tags alone, so it works when the snapshot or the workstation is gone; never a snapshot."""
    which = {"irbot:snapshot": target} if snapshot_id(target) else {"irbot:instance": target}
    volumes = _volumes(ec2, context.incident, station_id, which)
    if not volumes:
        steps.add("detach", "Detach and delete the workstation's volumes", Outcome.ALREADY,
                  f"irbot has no volume of {target} for this incident on {station_id}")
        return
    for found in volumes:
        volume_id = found["VolumeId"]
        made_from = _tags(found).get("irbot:snapshot", "?")

        def now(volume_id=volume_id) -> dict | None:
            return _volume(ec2, volume_id)

        def detach(volume_id=volume_id) -> str:
            attachment = next(iter((now() or {}).get("Attachments") or []), {})
            if attachment and attachment.get("State") not in ("detaching", "detached"):  # else an earlier run's detach is still going
                call(ec2, "detach_volume", VolumeId=volume_id, InstanceId=attachment["InstanceId"])
            # A volume still mounted stays "busy" until it is unmounted: said, and left so (forcing it would cut a reader off).
            _wait(ec2, volume_id, lambda v: v is None or not v.get("Attachments"), "detach", waits,
                  then=f"unmount it on the workstation (`sudo umount /mnt/{volume_id}`), then run --detach again.")
            return f"from {attachment.get('InstanceId')} ({attachment.get('Device')})"

        def delete(volume_id=volume_id) -> str:
            call(ec2, "delete_volume", VolumeId=volume_id)
            _wait(ec2, volume_id, lambda v: v is None or v["State"] == "deleted", "be deleted", waits)
            return f"deleted; {made_from} stays"

        attachments = found.get("Attachments") or []
        change(steps, f"detach:{volume_id}", f"Detach {volume_id}", dry_run=dry_run,
               plan=f"from {attachments[0].get('InstanceId')} ({attachments[0].get('Device')}): unmount it there first" if attachments else "",
               already=lambda now=now: None if (now() or {}).get("Attachments") else "not attached", do=detach)
        change(steps, f"delete:{volume_id}", f"Delete {volume_id} (made from {made_from})", dry_run=dry_run,
               plan=f"delete the volume; {made_from} stays",
               skip=lambda now=now: "it is still attached" if not dry_run and (now() or {}).get("Attachments") else None,
               already=lambda now=now: None if now() else "gone", do=delete)


def _volumes(ec2, incident: str, station_id: str, tags: dict[str, str], zone: str | None = None) -> list[dict]:
    """The volumes irbot made for this incident and this workstation with ``tags``, not being deleted."""
    wanted = {PURPOSE_TAG: WORKSTATION_PURPOSE, "irbot:incident": incident or "-", "irbot:workstation": station_id, **tags}
    filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in wanted.items()]
    found = paginate(ec2, "describe_volumes", "Volumes", Filters=filters + ([{"Name": "availability-zone", "Values": [zone]}] if zone else []))
    # Checked again on what came back: only a volume irbot made may be detached or deleted.
    return [v for v in found if _tags(v).get(PURPOSE_TAG) == WORKSTATION_PURPOSE and v.get("State") not in ("deleting", "deleted")]


def _volume(ec2, volume_id: str) -> dict | None:
    try:
        found = call(ec2, "describe_volumes", VolumeIds=[volume_id])["Volumes"]
    except ActionError as exc:
        if exc.code in GONE:
            return None
        raise
    return found[0] if found else None


def _wait(ec2, volume_id: str, ready: Callable[[dict | None], bool], what: str, waits: Waits, then: str = "") -> dict | None:
    """The volume once ``ready`` (None: it is gone); a sentence if EBS failed it or it did not ``what`` in time (``then``: what to do)."""
    deadline = time.monotonic() + waits.seconds
    while True:
        volume = _volume(ec2, volume_id)
        if volume is not None and volume.get("State") == "error":
            raise ActionError(f"EBS failed {volume_id} (state error): `--detach` deletes it; then ask again.")
        if ready(volume):
            return volume
        if time.monotonic() > deadline:
            raise ActionError(f"{volume_id} did not {what} in {waits.seconds:.0f}s" + (f": {then}" if then else "."))
        time.sleep(waits.poll)


def _attachment(volume: dict | None, instance_id: str, state: str | None = None) -> dict | None:
    """The volume's attachment to ``instance_id`` (in ``state``, if given), or None."""
    for attachment in (volume or {}).get("Attachments", []):
        if attachment.get("InstanceId") == instance_id and attachment.get("State") != "detached" and state in (None, attachment.get("State")):
            return attachment
    return None


def _tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}
