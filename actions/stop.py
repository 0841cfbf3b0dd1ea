"""stop: stop an instance, keeping its volumes (memory is lost: capture it first)."""

from __future__ import annotations

import boto3

from actions.artefacts import Result
from actions.aws import call, client
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.registry import Risk, action
from actions.steps import Outcome, StepLog


@action(
    "stop",
    risk=Risk.CHANGE,
    summary="Stop an instance; its EBS volumes stay, its memory is lost.",
    permissions=("ec2:DescribeInstances", "ec2:StopInstances"),
)
def stop(session: boto3.Session, instance_id: str, region: str, *, dry_run: bool = False, on_step=None,
         context=None, steps: StepLog | None = None) -> Result:
    ec2 = client(session, "ec2", region)
    _, instance = describe_instance(ec2, instance_id)
    state = instance["State"]["Name"]
    steps = steps or StepLog(on_step)
    title = f"Stop {instance_id}"
    if state in ("stopped", "stopping"):
        steps.add("stop-instance", title, Outcome.ALREADY, f"it is {state}")
    elif state in ("terminated", "shutting-down"):
        steps.add("stop-instance", title, Outcome.FAILED, f"it is {state}: nothing left to stop")
    elif dry_run:
        steps.add("stop-instance", title, Outcome.PLANNED, f"{state} → stopped")
    else:
        try:
            changed = call(ec2, "stop_instances", InstanceIds=[instance_id])["StoppingInstances"][0]
            steps.add("stop-instance", title, Outcome.DONE, f"{state} → {changed['CurrentState']['Name']}")
        except ActionError as exc:
            steps.add("stop-instance", title, Outcome.FAILED, str(exc))
    return Result("stop", instance_id, region, steps=steps.steps)
