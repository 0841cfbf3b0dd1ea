"""Finding an EC2 instance, with a sentence that helps when it isn't there."""

from __future__ import annotations

from actions.aws import call
from actions.errors import ActionError

NOT_FOUND_CODES = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed")


def describe_instance(ec2, instance_id: str) -> tuple[dict, dict]:
    """(reservation without its instances, instance) for ``instance_id``."""
    region = ec2.meta.region_name
    try:
        reservations = call(ec2, "describe_instances", InstanceIds=[instance_id])["Reservations"]
    except ActionError as exc:
        if exc.code in NOT_FOUND_CODES:
            raise ActionError(
                f"Instance {instance_id} was not found in {region}: check the ID, and the region (add --region R).", code=exc.code
            ) from exc
        raise
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            if instance["InstanceId"] == instance_id:
                header = {k: v for k, v in reservation.items() if k != "Instances"}
                return header, instance
    raise ActionError(f"Instance {instance_id} was not found in {region}: check the ID, and the region (add --region R).",
                      code="InvalidInstanceID.NotFound")
