"""stop: stop an instance, keeping its volumes (memory is lost: capture it first)."""

from __future__ import annotations

import boto3

from actions.artefacts import Result
from actions.aws import call, client
from actions.changes import change
from actions.context import RunContext
from actions.instances import describe_instance
from actions.registry import Risk, action
from actions.steps import StepLog


@action(
    "stop",
    risk=Risk.CHANGE,
    summary="Stop an instance; its EBS volumes stay, its memory is lost.",
    permissions=("ec2:DescribeInstances", "ec2:StopInstances"),
    card_state="stopped",
    loses_memory=True,
)
def stop(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False) -> Result:
    ec2 = client(session, "ec2", region)
    _, instance = describe_instance(ec2, instance_id)
    state = instance["State"]["Name"]

    def gone() -> str | None:
        return f"it is {state}: nothing left to stop" if state in ("terminated", "shutting-down") else None

    def stop_it() -> str:
        changed = call(ec2, "stop_instances", InstanceIds=[instance_id])["StoppingInstances"][0]
        return f"{state} → {changed['CurrentState']['Name']}"

    change(steps, "stop-instance", f"Stop {instance_id}", dry_run=dry_run, plan=f"{state} → stopped", impossible=gone,
           already=lambda: f"it is {state}" if state in ("stopped", "stopping") else None, do=stop_it)
    return Result("stop", instance_id, region, steps=steps.steps)
