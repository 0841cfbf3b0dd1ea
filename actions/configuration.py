"""What isolate changes and release puts back: an instance's configuration, read from AWS."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3

from actions.aws import call, client, paginate
from actions.network import is_primary

class Clients:
    def __init__(self, session: boto3.Session, region: str):
        self.ec2 = client(session, "ec2", region)
        self.iam = client(session, "iam", region)
        self.autoscaling = client(session, "autoscaling", region)
        self.elbv2 = client(session, "elbv2", region)
        self.elb = client(session, "elb", region)


# -- reading the configuration -------------------------------------------------------------


def configuration(aws: Clients, instance: dict) -> dict:
    """Everything isolate changes, as it is now: what release puts back."""
    instance_id = instance["InstanceId"]
    ec2 = aws.ec2
    termination = call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute="disableApiTermination")
    shutdown = call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior")
    addresses = call(ec2, "describe_addresses", Filters=[{"Name": "instance-id", "Values": [instance_id]}])["Addresses"]
    return {
        "instance_id": instance_id,
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vpc_id": instance.get("VpcId"),
        "subnet_id": instance.get("SubnetId"),
        "network_interfaces": [
            {"id": eni["NetworkInterfaceId"], "device_index": eni.get("Attachment", {}).get("DeviceIndex"),
             "groups": [g["GroupId"] for g in (instance.get("SecurityGroups", []) if is_primary(eni) else eni.get("Groups", []))]}
            for eni in instance.get("NetworkInterfaces", [])
        ],
        "instance_profile": profile_association(ec2, instance_id),
        "auto_scaling_group": auto_scaling_group(aws, instance_id),
        "target_groups": target_groups(aws, instance_id),
        "classic_load_balancers": classic_load_balancers(aws, instance_id),
        "elastic_ips": [{"public_ip": a.get("PublicIp"), "allocation_id": a.get("AllocationId"),
                         "network_interface": a.get("NetworkInterfaceId")} for a in addresses],
        "termination_protection": bool(termination["DisableApiTermination"]["Value"]),
        "shutdown_behavior": shutdown["InstanceInitiatedShutdownBehavior"]["Value"],
        "volumes": [
            {"device": b["DeviceName"], "volume_id": b["Ebs"]["VolumeId"], "delete_on_termination": b["Ebs"].get("DeleteOnTermination", False)}
            for b in instance.get("BlockDeviceMappings", []) if "Ebs" in b
        ],
        "tags": {t["Key"]: t["Value"] for t in instance.get("Tags", [])},
    }


def profile_association(ec2, instance_id: str) -> dict | None:
    associations = call(ec2, "describe_iam_instance_profile_associations",
                        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    for association in associations:
        if association.get("State", "associated") in ("associated", "associating"):
            return {"arn": association["IamInstanceProfile"]["Arn"], "association_id": association["AssociationId"]}
    return None


def auto_scaling_group(aws: Clients, instance_id: str) -> str | None:
    found = call(aws.autoscaling, "describe_auto_scaling_instances", InstanceIds=[instance_id])["AutoScalingInstances"]
    return found[0]["AutoScalingGroupName"] if found else None


def target_groups(aws: Clients, instance_id: str) -> list[dict]:
    memberships = []
    for group in paginate(aws.elbv2, "describe_target_groups", "TargetGroups"):
        if group.get("TargetType", "instance") != "instance":
            continue
        health = call(aws.elbv2, "describe_target_health", TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]
        for target in health:
            if target["Target"]["Id"] == instance_id:
                memberships.append({"arn": group["TargetGroupArn"], "port": target["Target"].get("Port"),
                                    "load_balancers": group.get("LoadBalancerArns", [])})
    return memberships


def classic_load_balancers(aws: Clients, instance_id: str) -> list[str]:
    return [
        lb["LoadBalancerName"]
        for lb in paginate(aws.elb, "describe_load_balancers", "LoadBalancerDescriptions")
        if any(i["InstanceId"] == instance_id for i in lb.get("Instances", []))
    ]


def tag(instance: dict, key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)



def short(arn: str) -> str:
    """The last part of an ARN, for people."""
    return arn.rsplit(":", 1)[-1]
