"""release: undo an isolation, putting back what its record says, the network last."""

from __future__ import annotations

import boto3

from actions.artefacts import Result, json_artefact
from actions.aws import call
from actions.changes import change
from actions.configuration import Clients, auto_scaling_group, classic_load_balancers, profile_association, short, tag, target_groups
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.isolate import RELEASE_NAME
from actions.network import interface_groups, set_interface_groups
from actions.registry import Grant, Need, Risk, action
from actions.scopes import STATUS_TAG, holding
from actions.steps import Outcome, StepLog
from actions.words import count

PERMISSIONS = (
    "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:ModifyInstanceAttribute", "ec2:CreateTags",
    "ec2:ModifyNetworkInterfaceAttribute", "ec2:DescribeNetworkInterfaces", "ec2:DescribeIamInstanceProfileAssociations", "ec2:DeleteTags",
    "ec2:AssociateIamInstanceProfile", "autoscaling:DescribeAutoScalingInstances", "autoscaling:AttachInstances",
    "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
)


# Re-associating the instance profile passes its role to EC2: to EC2 alone.
PASS_ROLE = Grant("PassRoleToEc2", ("iam:PassRole",), {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
                  "re-associate the instance profile isolation took away")


@action("release", risk=Risk.CHANGE, summary="Undo an isolation, restoring what was recorded.", permissions=PERMISSIONS,
        needs=(Need.RECORD,), card_state="released", grants=(PASS_ROLE,))
def release(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False) -> Result:
    record = context.record
    if record and record.get("released"):
        if record.get("request") == context.request_id:  # this very request got that far before its worker died
            steps.add("released", "Restore what isolation changed", Outcome.ALREADY, f"released by this request at {record.get('released_at')}")
            return Result("release", instance_id, region, steps=steps.steps)
        raise ActionError(f"irbot's record says {instance_id} was released already (request {record.get('request')} at "
                          f"{record.get('released_at')}); isolate it again first if it needs releasing.")
    if not record:
        raise ActionError(f"irbot has no isolation record for {instance_id}: it was not isolated by irbot, so there is nothing to restore.")
    aws = Clients(session, region)
    _, instance = describe_instance(aws.ec2, instance_id)
    ec2 = aws.ec2

    # irbot may change an instance's attributes only while it is tagged quarantined (actions.scopes): a suspect
    # could have removed the tag, so it is put back first; the last step writes "released".
    change(steps, "hold", f"Keep it tagged {STATUS_TAG}=quarantine while it is restored", dry_run=dry_run, plan=f"{STATUS_TAG}=quarantine",
           already=lambda: "it is" if tag(instance, STATUS_TAG) == "quarantine" else None,
           do=lambda: call(ec2, "create_tags", Resources=[instance_id], Tags=[{"Key": STATUS_TAG, "Value": "quarantine"}]), done="tagged again")

    # Attributes before groups: they don't depend on each other, and the network comes back last.
    def attribute(name: str):
        key = name[0].upper() + name[1:]
        return call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute=name)[key]["Value"]

    protection, behaviour = record["termination_protection"], record["shutdown_behavior"]
    change(steps, "termination-protection", f"Put termination protection back ({'on' if protection else 'off'})", dry_run=dry_run,
           plan=f"DisableApiTermination → {str(protection).lower()}",
           already=lambda: "as recorded" if bool(attribute("disableApiTermination")) == protection else None,
           do=lambda: holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id, DisableApiTermination={"Value": protection}), done="restored")
    change(steps, "shutdown-behavior", f"Put shutdown behaviour back ({behaviour})", dry_run=dry_run, plan=f"→ {behaviour}",
           already=lambda: "as recorded" if attribute("instanceInitiatedShutdownBehavior") == behaviour else None,
           do=lambda: holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": behaviour}), done="restored")

    def volumes_off_record() -> list[dict]:
        _, now = describe_instance(ec2, instance_id)
        recorded = {v["device"]: v["delete_on_termination"] for v in record["volumes"]}
        return [b for b in now.get("BlockDeviceMappings", []) if "Ebs" in b and b["DeviceName"] in recorded
                and b["Ebs"].get("DeleteOnTermination", False) != recorded[b["DeviceName"]]]

    def restore_volumes() -> str:
        recorded = {v["device"]: v["delete_on_termination"] for v in record["volumes"]}
        changed = volumes_off_record()
        holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id,
             BlockDeviceMappings=[{"DeviceName": b["DeviceName"], "Ebs": {"DeleteOnTermination": recorded[b["DeviceName"]]}} for b in changed])
        return f"{count(len(changed), 'volume')} restored"

    change(steps, "volumes", "Put DeleteOnTermination back on the volumes", dry_run=dry_run, plan="as recorded",
           already=lambda: None if volumes_off_record() else "as recorded", do=restore_volumes)

    group = record["auto_scaling_group"]
    change(steps, "auto-scaling", "Attach it to its Auto Scaling group again", dry_run=dry_run,
           plan=f"attach to {group} (its desired capacity grows by one)", skip=lambda: None if group else "it was in no Auto Scaling group",
           already=lambda: f"in {group}" if auto_scaling_group(aws, instance_id) == group else None,
           do=lambda: call(aws.autoscaling, "attach_instances", InstanceIds=[instance_id], AutoScalingGroupName=group), done=f"attached to {group}")

    for membership in record["target_groups"]:
        target = {"Id": instance_id, **({"Port": membership["port"]} if membership["port"] else {})}
        arn = membership["arn"]
        change(steps, f"target-group:{short(arn)}", f"Register it in {short(arn)} again", dry_run=dry_run, plan=f"register port {membership['port']}",
               already=lambda arn=arn: "registered" if any(m["arn"] == arn for m in target_groups(aws, instance_id)) else None,
               do=lambda arn=arn, target=target: call(aws.elbv2, "register_targets", TargetGroupArn=arn, Targets=[target]), done="registered")
    for name in record["classic_load_balancers"]:
        change(steps, f"classic-load-balancer:{name}", f"Register it behind {name} again", dry_run=dry_run, plan="register",
               already=lambda name=name: "registered" if name in classic_load_balancers(aws, instance_id) else None,
               do=lambda name=name: call(aws.elb, "register_instances_with_load_balancer", LoadBalancerName=name,
                                         Instances=[{"InstanceId": instance_id}]), done="registered")

    profile = record["instance_profile"]
    change(steps, "instance-profile", "Associate its instance profile again", dry_run=dry_run,
           plan=f"associate {short(profile['arn'])}" if profile else "", skip=lambda: None if profile else "it had no instance profile",
           already=lambda: "associated" if (profile_association(ec2, instance_id) or {}).get("arn") == profile["arn"] else None,
           do=lambda: holding(ec2, instance_id, "associate_iam_instance_profile", IamInstanceProfile={"Arn": profile["arn"]}, InstanceId=instance_id), done="associated")

    for eni in record["network_interfaces"]:
        wanted = eni["groups"]
        change(steps, f"network:{eni['id']}", f"Put {eni['id']}'s security groups back", dry_run=dry_run, plan=f"→ {', '.join(wanted)}",
               already=lambda eni=eni, wanted=wanted: "as recorded" if sorted(interface_groups(ec2, instance_id, eni)) == sorted(wanted) else None,
               do=lambda eni=eni, wanted=wanted: set_interface_groups(ec2, instance_id, eni, wanted), done=f"→ {', '.join(wanted)}")

    environment = record.get("tags", {}).get("Environment")

    def retag() -> None:
        call(ec2, "create_tags", Resources=[instance_id], Tags=[{"Key": STATUS_TAG, "Value": "released"},
                                                                {"Key": "irbot:released-at", "Value": context.started_at}])
        # Isolation wrote Environment=Quarantine:…; put back what was there, or nothing.
        if environment is not None:
            call(ec2, "create_tags", Resources=[instance_id], Tags=[{"Key": "Environment", "Value": environment}])
        else:
            call(ec2, "delete_tags", Resources=[instance_id], Tags=[{"Key": "Environment"}])

    change(steps, "tag", "Tag it as released, and put its Environment tag back", dry_run=dry_run, plan=f"{STATUS_TAG}=released",
           already=lambda: "tagged released" if tag(instance, STATUS_TAG) == "released" else None,
           do=retag, done=f"{STATUS_TAG}=released, Environment " + (f"= {environment}" if environment is not None else "removed"))
    if not dry_run and not any(step.outcome is Outcome.FAILED for step in steps.steps):
        # irbot's own word that the isolation is over: the next isolate records the state afresh, and a second release refuses.
        context.store(json_artefact(RELEASE_NAME, "The isolation this release ended", {
            "released": True, "released_at": context.started_at, "request": context.request_id, "isolation": record}, state_record=True))
    result = Result("release", instance_id, region, steps=steps.steps)
    result.notes.append("Evidence stays as it is: snapshots, saved objects and the role's revoke-older-sessions policy (it only denies tokens issued before the isolation).")
    return result
