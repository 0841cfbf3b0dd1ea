"""snapshot: crash-consistent snapshots of every attached volume, in one call."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import boto3

from actions.artefacts import Result
from actions.aws import call, client
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.changes import change
from actions.registry import Grant, Option, Risk, action
from actions.steps import Outcome, StepLog

PERMISSIONS = ("ec2:DescribeInstances", "ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DescribeSnapshots", "ec2:CopySnapshot")
# --copy-to-kms: EC2 uses the key for irbot while it copies (the grant outlives the call); through EC2 only.
KMS_THROUGH_EC2 = Grant("KmsThroughEc2", ("kms:CreateGrant", "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext",
                         "kms:ReEncryptFrom", "kms:ReEncryptTo"),
                        {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}, "copy snapshots encrypted with --copy-to-kms's key")


@action("snapshot", risk=Risk.READ, summary="Snapshot every volume of an instance (crash-consistent, one call).", permissions=PERMISSIONS,
        extra_options=(Option("--copy-to-kms", "KEY", "kms-key", says="and copy each snapshot, encrypted with KMS key {value}"),), card_state="snapshotted",
        grants=(KMS_THROUGH_EC2,))
def snapshot(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
             copy_to_kms: str | None = None, wait_seconds: float = 900, poll_seconds: float = 5) -> Result:
    ec2 = client(session, "ec2", region)
    _, instance = describe_instance(ec2, instance_id)
    result = Result("snapshot", instance_id, region)
    volumes = {b["Ebs"]["VolumeId"]: b["DeviceName"] for b in instance.get("BlockDeviceMappings", []) if "Ebs" in b}
    snapshots: list[dict] = []

    def mine() -> list[dict]:
        # The request ID on every snapshot makes a retried job find its own snapshots instead of making more.
        return call(ec2, "describe_snapshots", OwnerIds=["self"],
                    Filters=[{"Name": "tag:irbot:request", "Values": [context.request_id or "-"]}])["Snapshots"]

    def already() -> str | None:
        snapshots[:] = mine()
        return ", ".join(s["SnapshotId"] for s in snapshots) if snapshots else None

    def create() -> str:
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        tags = {"irbot:incident": context.incident, "irbot:instance": instance_id, "irbot:requester": context.requester,
                "irbot:request": context.request_id, "irbot:created-at": context.started_at}
        snapshots[:] = call(
            ec2, "create_snapshots",
            InstanceSpecification={"InstanceId": instance_id, "ExcludeBootVolume": False},
            Description=f"IR-{context.requester or 'irbot'}-{day}-{context.incident or instance_id}",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": k, "Value": v} for k, v in tags.items() if v]}],
            CopyTagsFromSource="volume",
        )["Snapshots"]
        return ", ".join(f"{s['SnapshotId']} of {s['VolumeId']} ({volumes.get(s['VolumeId'], '?')})" for s in snapshots)

    title = "Snapshot its volume" if len(volumes) == 1 else f"Snapshot {len(volumes)} volumes together"
    made = change(steps, "snapshot", title if volumes else "Snapshot the volumes", dry_run=dry_run,
                  plan=", ".join(f"{v} ({d})" for v, d in volumes.items()),
                  skip=lambda: None if volumes else "no EBS volumes attached", already=already, do=create)
    if made not in (Outcome.DONE, Outcome.ALREADY):
        result.steps = steps.steps
        return result

    def untagged() -> list[dict]:
        return [s for s in snapshots if not any(t["Key"] == "irbot:volume" for t in s.get("Tags", []))]

    def tag_volumes() -> str:
        for snap in untagged():
            call(ec2, "create_tags", Resources=[snap["SnapshotId"]], Tags=[{"Key": "irbot:volume", "Value": snap["VolumeId"]}])
        return "each snapshot names its volume (irbot:volume)"

    # A failed tag costs only this step: the snapshots exist and are reported either way.
    change(steps, "tag-volumes", "Tag each snapshot with its volume", dry_run=dry_run, plan="irbot:volume on each snapshot",
           already=lambda: None if untagged() else "tagged", do=tag_volumes)
    ids = [s["SnapshotId"] for s in snapshots]
    result.facts["snapshots"] = [{"snapshot_id": s["SnapshotId"], "volume_id": s["VolumeId"], "device": volumes.get(s["VolumeId"])} for s in snapshots]
    _wait(ec2, ids, steps, wait_seconds, poll_seconds)
    if copy_to_kms:
        _copy(ec2, region, ids, copy_to_kms, context, steps, result)
    result.steps = steps.steps
    return result


def _wait(ec2, ids: list[str], steps: StepLog, wait_seconds: float, poll_seconds: float) -> None:
    deadline = time.monotonic() + wait_seconds
    while True:
        found = call(ec2, "describe_snapshots", SnapshotIds=ids)["Snapshots"]
        states = {s["SnapshotId"]: (s.get("State"), s.get("Progress", "")) for s in found}
        if any(state == "error" for state, _ in states.values()):
            failed = [i for i, (state, _) in states.items() if state == "error"]
            steps.add("complete", "Wait for the snapshots to complete", Outcome.FAILED, f"{', '.join(failed)} failed")
            return
        if all(state == "completed" for state, _ in states.values()):
            steps.add("complete", "Wait for the snapshots to complete", Outcome.DONE, "completed" if len(ids) == 1 else f"all {len(ids)} completed")
            return
        if time.monotonic() > deadline:
            progress = ", ".join(f"{i} {p or state}" for i, (state, p) in states.items())
            steps.add("complete", "Wait for the snapshots to complete", Outcome.SKIPPED, f"still running after {wait_seconds:.0f}s ({progress}); they go on in AWS")
            return
        time.sleep(poll_seconds)


def _copy(ec2, region: str, ids: list[str], key: str, context: RunContext, steps: StepLog, result: Result) -> None:
    copies = []
    for snapshot_id in ids:
        existing = call(ec2, "describe_snapshots", OwnerIds=["self"], Filters=[{"Name": "tag:irbot:copy-of", "Values": [snapshot_id]}])["Snapshots"]
        if existing:
            copies.append(existing[0]["SnapshotId"])
            continue
        try:
            copy = call(ec2, "copy_snapshot", SourceRegion=region, SourceSnapshotId=snapshot_id, Encrypted=True, KmsKeyId=key,
                        Description=f"IR copy of {snapshot_id} for {context.incident}",
                        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "irbot:copy-of", "Value": snapshot_id},
                                                                                 {"Key": "irbot:incident", "Value": context.incident or "-"}]}])
            copies.append(copy["SnapshotId"])
        except ActionError as exc:
            steps.add(f"copy:{snapshot_id}", f"Copy {snapshot_id} encrypted with {key}", Outcome.FAILED, str(exc))
    if copies:
        steps.add("copy", f"Copy the snapshots encrypted with {key}", Outcome.DONE, ", ".join(copies))
    result.facts["copies"] = copies
