"""collect: an instance's metadata and console output, saved before anything changes it."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone

import boto3

from actions.artefacts import Artefact, Result, json_artefact
from actions.aws import call, client, paginate
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.registry import Reply, Risk, action
from actions.steps import StepLog


@action(
    "collect",
    risk=Risk.READ,
    summary="Save an instance's metadata (instance, volumes, interfaces, security groups, profile) and console output.",
    permissions=(
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeIamInstanceProfileAssociations",
        "ec2:GetConsoleOutput",
        "ec2:DescribeInstanceAttribute",
        "iam:GetInstanceProfile",
        "iam:ListAttachedRolePolicies",
        "iam:ListRolePolicies",
    ),
    card_state="collected",
    reply=Reply.EVIDENCE,
)
def collect(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False) -> Result:
    """Reads only: ``dry_run`` changes nothing here, and the evidence is what it returns."""
    ec2 = client(session, "ec2", region)
    result = Result("collect", instance_id, region)
    result.facts["started_at"] = _now()
    result.facts["identity"] = _identity(session, region)

    # Without the instance there is nothing to collect: this one failure ends the action.
    reservation, instance = describe_instance(ec2, instance_id)
    result.artefacts.append(
        json_artefact(
            "instance.json",
            "DescribeInstances: the instance and its reservation",
            {"Reservation": reservation, "Instance": instance},
        )
    )

    # The rest are independent: one that fails is noted and the others still run.
    parts = (
        ("volumes.json", "DescribeVolumes: attached EBS volumes", lambda: _volumes(ec2, instance_id)),
        ("network-interfaces.json", "DescribeNetworkInterfaces: attached interfaces", lambda: _interfaces(ec2, instance_id)),
        ("security-groups.json", "DescribeSecurityGroups: every group on the instance or its interfaces", lambda: _groups(ec2, instance)),
        ("instance-profile.json", "The instance profile, its association and its roles' policies", lambda: _profile(session, ec2, instance, region)),
    )
    for name, description, read in parts:
        try:
            result.artefacts.append(json_artefact(name, description, read()))
        except ActionError as exc:
            result.notes.append(f"{name} was not collected: {exc}")

    for name, read in (("console-output.txt", _console_output), ("user-data.txt", _user_data)):
        try:
            result.artefacts.append(read(ec2, instance_id))
        except ActionError as exc:
            result.notes.append(f"{name} was not collected: {exc}")

    result.facts["finished_at"] = _now()
    return result


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _identity(session: boto3.Session, region: str) -> dict:
    """Which account and principal collected this, for the chain of custody."""
    try:
        who = call(client(session, "sts", region), "get_caller_identity")
    except ActionError as exc:
        return {"error": str(exc)}
    return {"account": who.get("Account"), "arn": who.get("Arn")}


def _volumes(ec2, instance_id: str) -> dict:
    volumes = paginate(
        ec2, "describe_volumes", "Volumes", Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )
    return {"Volumes": volumes}


def _interfaces(ec2, instance_id: str) -> dict:
    interfaces = paginate(
        ec2,
        "describe_network_interfaces",
        "NetworkInterfaces",
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}],
    )
    return {"NetworkInterfaces": interfaces}


def _groups(ec2, instance: dict) -> dict:
    ids = {g["GroupId"] for g in instance.get("SecurityGroups", [])}
    for interface in instance.get("NetworkInterfaces", []):
        ids.update(g["GroupId"] for g in interface.get("Groups", []))
    if not ids:
        return {"SecurityGroups": []}
    return {"SecurityGroups": call(ec2, "describe_security_groups", GroupIds=sorted(ids))["SecurityGroups"]}


def _profile(session: boto3.Session, ec2, instance: dict, region: str) -> dict:
    profile = instance.get("IamInstanceProfile")
    if not profile:
        return {"InstanceProfile": None}
    associations = call(
        ec2,
        "describe_iam_instance_profile_associations",
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}],
    )["IamInstanceProfileAssociations"]
    iam = client(session, "iam", region)
    # The profile name is the last part of its ARN (a path may come before it).
    name = profile["Arn"].rsplit("/", 1)[-1]
    details = call(iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]
    roles = []
    for role in details.get("Roles", []):
        attached = paginate(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=role["RoleName"])
        inline = paginate(iam, "list_role_policies", "PolicyNames", RoleName=role["RoleName"])
        roles.append({"RoleName": role["RoleName"], "Arn": role["Arn"], "AttachedPolicies": attached, "InlinePolicyNames": inline})
    return {"InstanceProfile": details, "Associations": associations, "RolePolicies": roles}


def _console_output(ec2, instance_id: str) -> Artefact:
    response = call(ec2, "get_console_output", InstanceId=instance_id)
    return Artefact(
        "console-output.txt",
        decode_console_output(response.get("Output")).encode("utf-8"),
        "text/plain; charset=utf-8",
        "GetConsoleOutput: the serial console as AWS last buffered it",
    )


def _user_data(ec2, instance_id: str) -> Artefact:
    # Attackers hide persistence in user data: it runs again at every boot of some images.
    response = call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute="userData")
    raw = (response.get("UserData") or {}).get("Value")
    return Artefact(
        "user-data.txt",
        decode_console_output(raw).encode("utf-8"),
        "text/plain; charset=utf-8",
        "DescribeInstanceAttribute userData: what the instance runs at launch",
    )


def decode_console_output(raw: str | None) -> str:
    """AWS sends console output and user data as base64; some endpoints (moto) send plain text. Accept both."""
    if not raw:
        return ""
    try:
        return base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return raw
