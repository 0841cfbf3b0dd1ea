"""isolate: quarantine an instance the way AWS's incident guidance does.

In order: record the configuration (so release can restore it), protect the evidence, tag,
take the instance out of service, cut the network (open connections too), cut its credentials.
"""

from __future__ import annotations

import time

import boto3

from actions.artefacts import Result, json_artefact
from actions.aws import call
from actions.changes import change
from actions.configuration import (Clients, auto_scaling_group, classic_load_balancers, configuration, profile_association, short,
                                   tag, target_groups)
from actions.context import RunContext
from actions.errors import ActionError
from actions.iam import revoke_older_sessions
from actions.instances import describe_instance
from actions.network import EVERYWHERE, ensure_group, interface_groups, set_interface_groups
from actions.registry import Need, Risk, action
from actions.scopes import STATUS_TAG, holding
from actions.steps import Outcome, StepLog

RECORD_NAME = "isolation-record.json"
RELEASE_NAME = "release-record.json"


def is_isolation_record(record: dict | None) -> bool:
    """Whether irbot's newest state record of the target is an isolation not released since."""
    return bool(record) and not record.get("released")

PERMISSIONS = (
    "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:ModifyInstanceAttribute", "ec2:CreateTags",
    "ec2:DescribeSecurityGroups", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
    "ec2:ModifyNetworkInterfaceAttribute", "ec2:DescribeNetworkInterfaces", "ec2:DescribeAddresses", "ec2:DescribeRouteTables",
    "ec2:DescribeIamInstanceProfileAssociations", "ec2:DisassociateIamInstanceProfile",
    "autoscaling:DescribeAutoScalingInstances", "autoscaling:DetachInstances",
    "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "iam:GetInstanceProfile", "iam:GetRole", "iam:GetRolePolicy", "iam:PutRolePolicy",
)


@action("isolate", risk=Risk.CHANGE, summary="Quarantine an instance: protect it, take it out of service, cut its network and credentials.",
        permissions=PERMISSIONS, needs=(Need.RECORD,), card_state="isolated")
def isolate(session: boto3.Session, instance_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False) -> Result:
    aws = Clients(session, region)
    _, instance = describe_instance(aws.ec2, instance_id)
    result = Result("isolate", instance_id, region)
    # The record of an earlier isolation that was not released is the original state: keep it, even
    # if that isolation stopped halfway, so a second run finishes the job and release restores the truth.
    # Decided from irbot's own record alone: the instance's tags are the suspect's to write.
    quarantined = is_isolation_record(context.record)
    record = context.record if quarantined else configuration(aws, instance)

    # 1. Record, before anything changes; a second isolate keeps the first record (the original state).
    def keep_record() -> str:
        # Marked as the target's state record: the worker keeps it where a later release finds it.
        return "saved to " + context.store(json_artefact(RECORD_NAME, "The configuration before isolation, for release", record, state_record=True))

    change(steps, "record", "Record the current configuration", dry_run=dry_run, plan="save it as evidence, for release",
           already=lambda: "the configuration from before the first isolation is kept" if quarantined else None, do=keep_record)
    result.facts["record"] = record

    # The tag first: irbot's policy lets it change an instance's attributes only while the instance carries it (actions.scopes).
    _tag_quarantine(aws, instance, steps, dry_run, context)
    _protect(aws, instance, steps, dry_run)
    _take_out_of_service(aws, record, steps, dry_run)
    _cut_network(aws, instance, record, steps, dry_run, context, result)
    _cut_credentials(aws, instance_id, record, steps, dry_run, result, context.started_at)
    result.steps = steps.steps
    return result


def _protect(aws: Clients, instance: dict, steps: StepLog, dry_run: bool) -> None:
    instance_id = instance["InstanceId"]
    ec2 = aws.ec2

    def attribute(name: str):
        key = name[0].upper() + name[1:]
        return call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute=name)[key]["Value"]

    change(steps, "termination-protection", "Turn termination protection on", dry_run=dry_run, plan="DisableApiTermination → true",
           already=lambda: "it is on" if attribute("disableApiTermination") else None,
           do=lambda: holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id, DisableApiTermination={"Value": True}), done="on")
    change(steps, "shutdown-behavior", "Make shutdown stop the instance, not terminate it", dry_run=dry_run, plan="shutdown behaviour → stop",
           already=lambda: "it is stop" if attribute("instanceInitiatedShutdownBehavior") == "stop" else None,
           do=lambda: holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "stop"}), done="stop")

    def volumes_to_keep() -> list[dict]:
        _, now = describe_instance(ec2, instance_id)
        return [b for b in now.get("BlockDeviceMappings", []) if "Ebs" in b and b["Ebs"].get("DeleteOnTermination")]

    def keep_volumes() -> str:
        devices = volumes_to_keep()
        holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id,
             BlockDeviceMappings=[{"DeviceName": b["DeviceName"], "Ebs": {"DeleteOnTermination": False}} for b in devices])
        return ", ".join(f"{b['Ebs']['VolumeId']} ({b['DeviceName']})" for b in devices) + (" now survives termination" if len(devices) == 1 else " now survive termination")

    volumes = [b for b in instance.get("BlockDeviceMappings", []) if "Ebs" in b]
    change(steps, "keep-volumes", "Keep every EBS volume if the instance is terminated", dry_run=dry_run,
           plan="DeleteOnTermination → false on " + ", ".join(b["Ebs"]["VolumeId"] for b in volumes if b["Ebs"].get("DeleteOnTermination")),
           skip=lambda: None if volumes else "no EBS volumes attached",
           already=lambda: None if volumes_to_keep() else ("its volume survives termination" if len(volumes) == 1 else f"all {len(volumes)} volumes survive termination"), do=keep_volumes)


def _tag_quarantine(aws: Clients, instance: dict, steps: StepLog, dry_run: bool, context: RunContext) -> None:
    tags = {
        STATUS_TAG: "quarantine",
        "irbot:incident": context.incident,
        "irbot:requester": context.requester,
        "irbot:approver": ",".join(context.approvers),
        "irbot:isolated-at": context.started_at,
        "Environment": f"Quarantine:{context.incident}",
    }

    def write() -> None:
        # The status tag alone first: every later step needs it, and the rest could meet the 50-tag limit.
        call(aws.ec2, "create_tags", Resources=[instance["InstanceId"]], Tags=[{"Key": STATUS_TAG, "Value": "quarantine"}])
        call(aws.ec2, "create_tags", Resources=[instance["InstanceId"]], Tags=[{"Key": k, "Value": v} for k, v in tags.items() if v])

    # Already so only if every tag is as this isolation would write it: a suspect can preset the status tag.
    change(steps, "tag", "Tag it as quarantined", dry_run=dry_run, plan=f"{STATUS_TAG}=quarantine, incident {context.incident}",
           already=lambda: "tagged by an earlier isolation"
           if all(tag(instance, k) == v for k, v in tags.items() if v and k != "irbot:isolated-at") and tag(instance, "irbot:isolated-at") else None,
           do=write, done=f"{STATUS_TAG}=quarantine, incident {context.incident}")


def _take_out_of_service(aws: Clients, record: dict, steps: StepLog, dry_run: bool) -> None:
    instance_id = record["instance_id"]
    group = record["auto_scaling_group"]
    # Keep the desired capacity, so the group launches a replacement and the service stays up.
    change(steps, "auto-scaling", "Detach it from its Auto Scaling group", dry_run=dry_run,
           plan=f"detach from {group}; the group launches a replacement",
           skip=lambda: None if group else "not in an Auto Scaling group",
           already=lambda: None if auto_scaling_group(aws, instance_id) else f"not in {group} any more",
           do=lambda: call(aws.autoscaling, "detach_instances", InstanceIds=[instance_id], AutoScalingGroupName=group,
                           ShouldDecrementDesiredCapacity=False), done=f"detached from {group}; it will launch a replacement")

    def registered() -> list[dict]:
        return target_groups(aws, instance_id)

    def deregister() -> str:
        memberships = registered()
        for m in memberships:
            target = {"Id": instance_id, **({"Port": m["port"]} if m["port"] else {})}
            call(aws.elbv2, "deregister_targets", TargetGroupArn=m["arn"], Targets=[target])
        return "deregistered from " + ", ".join(short(m["arn"]) for m in memberships)

    groups = record["target_groups"]
    change(steps, "target-groups", "Deregister it from its target groups", dry_run=dry_run,
           plan="deregister from " + ", ".join(short(m["arn"]) for m in groups),
           skip=lambda: None if groups else "in no target group",
           already=lambda: None if registered() else "in no target group any more", do=deregister)

    balancers = record["classic_load_balancers"]

    def deregister_classic() -> str:
        for name in classic_load_balancers(aws, instance_id):
            call(aws.elb, "deregister_instances_from_load_balancer", LoadBalancerName=name, Instances=[{"InstanceId": instance_id}])
        return "deregistered from " + ", ".join(balancers)

    change(steps, "classic-load-balancers", "Deregister it from classic load balancers", dry_run=dry_run,
           plan="deregister from " + ", ".join(balancers), skip=lambda: None if balancers else "behind no classic load balancer",
           already=lambda: None if classic_load_balancers(aws, instance_id) else "behind none any more", do=deregister_classic)


def _cut_network(aws: Clients, instance: dict, record: dict, steps: StepLog, dry_run: bool, context: RunContext, result: Result) -> None:
    ec2 = aws.ec2
    vpc = instance.get("VpcId")
    if not vpc:
        steps.add("network", "Cut the network", Outcome.FAILED, "the instance is not in a VPC (EC2-Classic): isolate it by hand")
        return
    everything = {("-1", None, None, cidr) for cidr in EVERYWHERE}
    allowed_in = {("tcp", 22, 22, source) for source in context.capture_path}
    groups: dict[str, str | None] = {}

    def ensure() -> tuple[str, bool]:
        notes, changed = [], False
        for kind, description, ingress, egress in (
            ("untrack", "irbot: allows everything so existing flows become untracked", everything, everything),
            ("isolation", "irbot: isolation, no traffic" + (" but SSH from the capture path" if allowed_in else ""), allowed_in, set()),
        ):
            groups[kind], note, altered = ensure_group(ec2, vpc, f"irbot-{kind}-{vpc}", description, ingress, egress, dry_run)
            notes.append(note)
            changed = changed or altered
        return "; ".join(notes), changed

    try:
        detail, changed = ensure()
        outcome = Outcome.ALREADY if not changed else (Outcome.PLANNED if dry_run else Outcome.DONE)
        steps.add("isolation-groups", f"Have the per-VPC untrack and isolation groups for {vpc}", outcome, detail)
    except ActionError as exc:
        steps.add("isolation-groups", f"Have the per-VPC untrack and isolation groups for {vpc}", Outcome.FAILED, str(exc))
        steps.add("network", "Move every interface to the isolation group", Outcome.SKIPPED, "the isolation group is not there")
        return

    instance_id = instance["InstanceId"]
    for eni in record["network_interfaces"]:
        def move(eni=eni) -> str:
            if interface_groups(ec2, instance_id, eni) == [groups["untrack"]]:
                # A run that died during its pause left the interface allow-all: its flows are untracked already, cut now.
                set_interface_groups(ec2, instance_id, eni, [groups["isolation"]])
                return f"{groups['untrack']} (left by an interrupted run) → {groups['isolation']} (isolation)"
            # Allow-all first turns the interface's tracked flows untracked; the empty group then drops them.
            set_interface_groups(ec2, instance_id, eni, [groups["untrack"]])
            path = f"{', '.join(eni['groups'])} → {groups['untrack']} (untrack) → {groups['isolation']} (isolation)"
            try:
                time.sleep(context.untrack_pause_seconds)
                set_interface_groups(ec2, instance_id, eni, [groups["isolation"]])
            except ActionError as exc:  # throttling or an AWS error that outlasted the client's retries
                isolated, sentence = _leave_allow_all(ec2, instance_id, eni, groups)
                if not isolated:
                    raise ActionError(f"the move to the isolation group failed ({exc}) {sentence}", code=exc.code) from None
                return f"{path}; {sentence} (the first try failed: {exc})"
            except BaseException:  # a timeout or a shutdown inside the pause: fail closed, then let it end the job
                _leave_allow_all(ec2, instance_id, eni, groups)
                raise
            return path

        change(steps, f"network:{eni['id']}", f"Cut {eni['id']}, open connections included", dry_run=dry_run,
               plan=f"{', '.join(eni['groups'])} → untrack group → isolation group",
               already=lambda eni=eni: "in the isolation group alone"
               if groups["isolation"] and interface_groups(ec2, instance_id, eni) == [groups["isolation"]] else None,
               do=move)
    result.notes.extend(_still_tracked(aws, instance, record))


# Pauses between tries of the move out of the allow-all group: long enough for throttling to pass.
LEAVE_ALLOW_ALL_PAUSES = (0, 2, 4, 8, 16)


def _leave_allow_all(ec2, instance_id: str, eni: dict, groups: dict) -> tuple[bool, str]:
    """Fail closed: never leave an interface in the allow-all group. The isolation group, tried again with
    pauses; then the groups it had; and if even that fails, a sentence that says to act by hand.
    Returns whether the interface ended up isolated, and the sentence saying where it is."""
    for pause in LEAVE_ALLOW_ALL_PAUSES:
        time.sleep(pause)
        try:
            set_interface_groups(ec2, instance_id, eni, [groups["isolation"]])
            return True, f"a later try moved {eni['id']} to the isolation group"
        except ActionError:
            continue
    try:
        set_interface_groups(ec2, instance_id, eni, eni["groups"])
        return False, f"{eni['id']} is back in its own groups ({', '.join(eni['groups'])}), NOT isolated: run the isolation again."
    except ActionError:
        return False, f"{eni['id']} may still be in the allow-all group {groups['untrack']}: move it out by hand now."


def _still_tracked(aws: Clients, instance: dict, record: dict) -> list[str]:
    """Paths where AWS keeps tracking connections whatever the security group says."""
    notes = []
    subnet = instance.get("SubnetId")
    try:
        tables = call(aws.ec2, "describe_route_tables", Filters=[{"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"]
        if not tables:
            tables = call(aws.ec2, "describe_route_tables", Filters=[{"Name": "vpc-id", "Values": [instance["VpcId"]]},
                                                                     {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
        for table in tables:
            for route in table.get("Routes", []):
                if route.get("NatGatewayId"):
                    notes.append(f"Connections through NAT gateway {route['NatGatewayId']} may stay tracked: watch them, or cut the route.")
    except ActionError as exc:
        notes.append(f"Could not check the routes for NAT gateways: {exc}")
    for membership in record["target_groups"]:
        for lb in membership.get("load_balancers", []):
            if ":loadbalancer/net/" in lb:
                notes.append(f"A network load balancer ({short(lb)}) was in front: connections through it may stay tracked.")
    notes.append("ICMP flows stay tracked whatever the groups say; security groups never cut traffic inside the instance.")
    return notes


# -- credentials ------------------------------------------------------------------------------


def _cut_credentials(aws: Clients, instance_id: str, record: dict, steps: StepLog, dry_run: bool, result: Result, since: str) -> None:
    profile = record["instance_profile"]

    def disassociate() -> str:
        current = profile_association(aws.ec2, instance_id)
        holding(aws.ec2, instance_id, "disassociate_iam_instance_profile", AssociationId=current["association_id"])
        return f"{short(current['arn'])} disassociated"

    change(steps, "instance-profile", "Disassociate its instance profile", dry_run=dry_run,
           plan=f"disassociate {short(profile['arn'])}" if profile else "",
           skip=lambda: None if profile or profile_association(aws.ec2, instance_id) else "no instance profile",
           already=lambda: None if profile_association(aws.ec2, instance_id) else "no profile associated any more", do=disassociate)
    if not profile:
        return
    name = profile["arn"].rsplit("/", 1)[-1]
    try:
        roles = [r["RoleName"] for r in call(aws.iam, "get_instance_profile", InstanceProfileName=name)["InstanceProfile"]["Roles"]]
    except ActionError as exc:
        steps.add("revoke-sessions", "Revoke the role's older sessions", Outcome.FAILED, str(exc))
        return
    for role in roles:
        revoke_older_sessions(aws.iam, role, dry_run, steps, since=since)
