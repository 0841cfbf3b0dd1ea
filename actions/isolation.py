"""isolate and release: quarantine an instance the way AWS's incident guidance does, and undo it.

isolate, in order: record the configuration (so release can restore it), protect the
evidence, tag, take the instance out of service, cut the network (open connections too),
cut its credentials. release puts back what the record says, network last.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import boto3

from actions.artefacts import Result, json_artefact
from actions.aws import call, client, paginate
from actions.changes import change
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.policies import cutoff_time, session_cutoff
from actions.registry import Risk, action
from actions.steps import Outcome, StepLog

STATUS_TAG = "irbot:status"
REVOKE_POLICY = "irbot-revoke-older-sessions"
EVERYWHERE = ("0.0.0.0/0", "::/0")

ISOLATE_PERMISSIONS = (
    "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:ModifyInstanceAttribute", "ec2:CreateTags",
    "ec2:DescribeSecurityGroups", "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
    "ec2:ModifyNetworkInterfaceAttribute", "ec2:DescribeAddresses", "ec2:DescribeRouteTables",
    "ec2:DescribeIamInstanceProfileAssociations", "ec2:DisassociateIamInstanceProfile",
    "autoscaling:DescribeAutoScalingInstances", "autoscaling:DetachInstances",
    "elasticloadbalancing:DescribeTargetGroups", "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:DeregisterTargets",
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
    "iam:GetInstanceProfile", "iam:GetRolePolicy", "iam:PutRolePolicy",
)
RELEASE_PERMISSIONS = (
    "ec2:DescribeInstances", "ec2:DescribeInstanceAttribute", "ec2:ModifyInstanceAttribute", "ec2:CreateTags",
    "ec2:ModifyNetworkInterfaceAttribute", "ec2:DescribeIamInstanceProfileAssociations", "ec2:DeleteTags",
    "ec2:AssociateIamInstanceProfile", "autoscaling:DescribeAutoScalingInstances", "autoscaling:AttachInstances",
    "elasticloadbalancing:DescribeTargetHealth", "elasticloadbalancing:RegisterTargets",
    "elasticloadbalancing:DescribeLoadBalancers", "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
)


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
             "groups": [g["GroupId"] for g in (instance.get("SecurityGroups", []) if _primary(eni) else eni.get("Groups", []))]}
            for eni in instance.get("NetworkInterfaces", [])
        ],
        "instance_profile": _profile_association(ec2, instance_id),
        "auto_scaling_group": _auto_scaling_group(aws, instance_id),
        "target_groups": _target_groups(aws, instance_id),
        "classic_load_balancers": _classic_load_balancers(aws, instance_id),
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


def _primary(eni: dict) -> bool:
    index = eni["device_index"] if "device_index" in eni else eni.get("Attachment", {}).get("DeviceIndex")
    return index in (0, None)


def interface_groups(ec2, instance_id: str, eni: dict) -> list[str]:
    """The groups on one interface now. The primary interface's are the instance's own groups."""
    if _primary(eni):
        _, now = describe_instance(ec2, instance_id)
        return [g["GroupId"] for g in now.get("SecurityGroups", [])]
    found = call(ec2, "describe_network_interfaces", NetworkInterfaceIds=[eni["id"]])["NetworkInterfaces"][0]
    return [g["GroupId"] for g in found.get("Groups", [])]


def set_interface_groups(ec2, instance_id: str, eni: dict, groups: list[str]) -> None:
    # ModifyInstanceAttribute(Groups) is the primary interface's call; other interfaces have their own.
    if _primary(eni):
        call(ec2, "modify_instance_attribute", InstanceId=instance_id, Groups=groups)
    else:
        call(ec2, "modify_network_interface_attribute", NetworkInterfaceId=eni["id"], Groups=groups)


def _profile_association(ec2, instance_id: str) -> dict | None:
    associations = call(ec2, "describe_iam_instance_profile_associations",
                        Filters=[{"Name": "instance-id", "Values": [instance_id]}])["IamInstanceProfileAssociations"]
    for association in associations:
        if association.get("State", "associated") in ("associated", "associating"):
            return {"arn": association["IamInstanceProfile"]["Arn"], "association_id": association["AssociationId"]}
    return None


def _auto_scaling_group(aws: Clients, instance_id: str) -> str | None:
    found = call(aws.autoscaling, "describe_auto_scaling_instances", InstanceIds=[instance_id])["AutoScalingInstances"]
    return found[0]["AutoScalingGroupName"] if found else None


def _target_groups(aws: Clients, instance_id: str) -> list[dict]:
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


def _classic_load_balancers(aws: Clients, instance_id: str) -> list[str]:
    return [
        lb["LoadBalancerName"]
        for lb in paginate(aws.elb, "describe_load_balancers", "LoadBalancerDescriptions")
        if any(i["InstanceId"] == instance_id for i in lb.get("Instances", []))
    ]


def _tag(instance: dict, key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


# -- isolate --------------------------------------------------------------------------------


@action("isolate", risk=Risk.CHANGE, summary="Quarantine an instance: protect it, take it out of service, cut its network and credentials.",
        permissions=ISOLATE_PERMISSIONS)
def isolate(session: boto3.Session, instance_id: str, region: str, *, dry_run: bool = False, on_step=None,
            context: RunContext = RunContext(), steps: StepLog | None = None, record: dict | None = None) -> Result:
    aws = Clients(session, region)
    _, instance = describe_instance(aws.ec2, instance_id)
    steps = steps or StepLog(on_step)
    result = Result("isolate", instance_id, region)
    # The record of an earlier isolation that was not released is the original state: keep it, even
    # if that isolation stopped halfway, so a second run finishes the job and release restores the truth.
    quarantined = bool(record) and _tag(instance, STATUS_TAG) != "released" or _tag(instance, STATUS_TAG) == "quarantine"
    record = record if (record and quarantined) else configuration(aws, instance)

    # 1. Record, before anything changes; a second isolate keeps the first record (the original state).
    def keep_record() -> str:
        return "saved to " + context.store(json_artefact("isolation-record.json", "The configuration before isolation, for release", record))

    change(steps, "record", "Record the current configuration", dry_run=dry_run, plan="save it as evidence, for release",
           already=lambda: "the configuration from before the first isolation is kept" if quarantined else None, do=keep_record)
    result.facts["record"] = record

    _protect(aws, instance, steps, dry_run)
    _tag_quarantine(aws, instance, steps, dry_run, context)
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
           do=lambda: call(ec2, "modify_instance_attribute", InstanceId=instance_id, DisableApiTermination={"Value": True}), done="on")
    change(steps, "shutdown-behavior", "Make shutdown stop the instance, not terminate it", dry_run=dry_run, plan="shutdown behaviour → stop",
           already=lambda: "it is stop" if attribute("instanceInitiatedShutdownBehavior") == "stop" else None,
           do=lambda: call(ec2, "modify_instance_attribute", InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": "stop"}), done="stop")

    def volumes_to_keep() -> list[dict]:
        _, now = describe_instance(ec2, instance_id)
        return [b for b in now.get("BlockDeviceMappings", []) if "Ebs" in b and b["Ebs"].get("DeleteOnTermination")]

    def keep_volumes() -> str:
        devices = volumes_to_keep()
        call(ec2, "modify_instance_attribute", InstanceId=instance_id,
             BlockDeviceMappings=[{"DeviceName": b["DeviceName"], "Ebs": {"DeleteOnTermination": False}} for b in devices])
        return ", ".join(f"{b['Ebs']['VolumeId']} ({b['DeviceName']})" for b in devices) + " now survive termination"

    volumes = [b for b in instance.get("BlockDeviceMappings", []) if "Ebs" in b]
    change(steps, "keep-volumes", "Keep every EBS volume if the instance is terminated", dry_run=dry_run,
           plan="DeleteOnTermination → false on " + ", ".join(b["Ebs"]["VolumeId"] for b in volumes if b["Ebs"].get("DeleteOnTermination")),
           skip=lambda: None if volumes else "no EBS volumes attached",
           already=lambda: None if volumes_to_keep() else f"all {len(volumes)} volumes survive termination", do=keep_volumes)


def _tag_quarantine(aws: Clients, instance: dict, steps: StepLog, dry_run: bool, context: RunContext) -> None:
    tags = {
        STATUS_TAG: "quarantine",
        "irbot:incident": context.incident,
        "irbot:requester": context.requester,
        "irbot:approver": ",".join(context.approvers),
        "irbot:isolated-at": context.started_at,
        "Environment": f"Quarantine:{context.incident}",
    }
    change(steps, "tag", "Tag it as quarantined", dry_run=dry_run, plan=f"{STATUS_TAG}=quarantine, incident {context.incident}",
           already=lambda: "tagged by an earlier isolation" if _tag(instance, STATUS_TAG) == "quarantine" else None,
           do=lambda: call(aws.ec2, "create_tags", Resources=[instance["InstanceId"]],
                           Tags=[{"Key": k, "Value": v} for k, v in tags.items() if v]), done=f"{STATUS_TAG}=quarantine, incident {context.incident}")


def _take_out_of_service(aws: Clients, record: dict, steps: StepLog, dry_run: bool) -> None:
    instance_id = record["instance_id"]
    group = record["auto_scaling_group"]
    # Keep the desired capacity, so the group launches a replacement and the service stays up.
    change(steps, "auto-scaling", "Detach it from its Auto Scaling group", dry_run=dry_run,
           plan=f"detach from {group}; the group launches a replacement",
           skip=lambda: None if group else "not in an Auto Scaling group",
           already=lambda: None if _auto_scaling_group(aws, instance_id) else f"not in {group} any more",
           do=lambda: call(aws.autoscaling, "detach_instances", InstanceIds=[instance_id], AutoScalingGroupName=group,
                           ShouldDecrementDesiredCapacity=False), done=f"detached from {group}; it will launch a replacement")

    def registered() -> list[dict]:
        return _target_groups(aws, instance_id)

    def deregister() -> str:
        memberships = registered()
        for m in memberships:
            target = {"Id": instance_id, **({"Port": m["port"]} if m["port"] else {})}
            call(aws.elbv2, "deregister_targets", TargetGroupArn=m["arn"], Targets=[target])
        return "deregistered from " + ", ".join(_short(m["arn"]) for m in memberships)

    groups = record["target_groups"]
    change(steps, "target-groups", "Deregister it from its target groups", dry_run=dry_run,
           plan="deregister from " + ", ".join(_short(m["arn"]) for m in groups),
           skip=lambda: None if groups else "in no target group",
           already=lambda: None if registered() else "in no target group any more", do=deregister)

    balancers = record["classic_load_balancers"]

    def deregister_classic() -> str:
        for name in _classic_load_balancers(aws, instance_id):
            call(aws.elb, "deregister_instances_from_load_balancer", LoadBalancerName=name, Instances=[{"InstanceId": instance_id}])
        return "deregistered from " + ", ".join(balancers)

    change(steps, "classic-load-balancers", "Deregister it from classic load balancers", dry_run=dry_run,
           plan="deregister from " + ", ".join(balancers), skip=lambda: None if balancers else "behind no classic load balancer",
           already=lambda: None if _classic_load_balancers(aws, instance_id) else "behind none any more", do=deregister_classic)


def _short(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


# -- network ------------------------------------------------------------------------------


def _rules(permissions: list[dict]) -> set[tuple]:
    """Security group rules as comparable tuples (protocol, from, to, range)."""
    rules = set()
    for p in permissions:
        key = (p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort"))
        for r in p.get("IpRanges", []):
            rules.add((*key, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            rules.add((*key, r["CidrIpv6"]))
        for r in p.get("UserIdGroupPairs", []):
            rules.add((*key, r.get("GroupId")))
        for r in p.get("PrefixListIds", []):
            rules.add((*key, r.get("PrefixListId")))
    return rules


def _permission(rule: tuple) -> dict:
    protocol, start, end, source = rule
    p: dict = {"IpProtocol": protocol}
    if protocol != "-1":
        p.update(FromPort=start, ToPort=end)
    if source.startswith("sg-"):
        p["UserIdGroupPairs"] = [{"GroupId": source}]
    elif source.startswith("pl-"):
        p["PrefixListIds"] = [{"PrefixListId": source}]
    elif ":" in source:
        p["Ipv6Ranges"] = [{"CidrIpv6": source}]
    else:
        p["IpRanges"] = [{"CidrIp": source}]
    return p


def _normal(rule: tuple) -> tuple:
    protocol, start, end, source = rule
    return (protocol, None, None, source) if protocol == "-1" else rule


def ensure_group(ec2, vpc_id: str, name: str, description: str, ingress: set[tuple], egress: set[tuple], dry_run: bool) -> tuple[str | None, str, bool]:
    """The per-VPC group called ``name`` with exactly these rules: created once, reused, corrected if changed.

    Returns (group ID, what was done, whether anything was or would be changed)."""
    found = call(ec2, "describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"]
    if not found:
        if dry_run:
            return None, f"would create {name}", True
        try:
            group_id = call(ec2, "create_security_group", GroupName=name, Description=description, VpcId=vpc_id,
                            TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "irbot:purpose", "Value": name.split("-")[1]}]}])["GroupId"]
            verb = "created"
        except ActionError as exc:
            if "InvalidGroup.Duplicate" not in str(exc):
                raise
            # Another isolation in this VPC made it a moment ago: use that one.
            group_id = call(ec2, "describe_security_groups", Filters=[{"Name": "group-name", "Values": [name]},
                                                                      {"Name": "vpc-id", "Values": [vpc_id]}])["SecurityGroups"][0]["GroupId"]
            verb = "reused"
        found = call(ec2, "describe_security_groups", GroupIds=[group_id])["SecurityGroups"]
    else:
        verb = "reused"
    group = found[0]
    fixes = 0
    for direction, wanted in (("ingress", ingress), ("egress", egress)):
        have = {_normal(r) for r in _rules(group["IpPermissions" if direction == "ingress" else "IpPermissionsEgress"])}
        wanted = {_normal(r) for r in wanted}
        extra, missing = have - wanted, wanted - have
        if dry_run:
            fixes += len(extra) + len(missing)
            continue
        if extra:
            call(ec2, f"revoke_security_group_{direction}", GroupId=group["GroupId"], IpPermissions=[_permission(r) for r in extra])
        if missing:
            call(ec2, f"authorize_security_group_{direction}", GroupId=group["GroupId"], IpPermissions=[_permission(r) for r in missing])
        fixes += len(extra) + len(missing)
    return group["GroupId"], f"{verb} {name} ({group['GroupId']})" + (f", {fixes} rules set" if fixes else ""), verb == "created" or fixes > 0


def _cut_network(aws: Clients, instance: dict, record: dict, steps: StepLog, dry_run: bool, context: RunContext, result: Result) -> None:
    ec2 = aws.ec2
    vpc = instance.get("VpcId")
    if not vpc:
        steps.add("network", "Cut the network", Outcome.FAILED, "the instance is not in a VPC (EC2-Classic): isolate it by hand")
        return
    everything = {("-1", None, None, cidr) for cidr in EVERYWHERE}
    allowed_in = {("tcp", 22, 22, context.analyst_cidr)} if context.analyst_cidr else set()
    groups: dict[str, str | None] = {}

    def ensure() -> tuple[str, bool]:
        notes, changed = [], False
        for kind, description, ingress, egress in (
            ("untrack", "irbot: allows everything so existing flows become untracked", everything, everything),
            ("isolation", "irbot: isolation, no traffic" + (" but SSH from the analyst" if allowed_in else ""), allowed_in, set()),
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
            # Allow-all first turns the interface's tracked flows untracked; the empty group then drops them.
            set_interface_groups(ec2, instance_id, eni, [groups["untrack"]])
            try:
                time.sleep(context.untrack_pause_seconds)
                set_interface_groups(ec2, instance_id, eni, [groups["isolation"]])
            except BaseException as exc:
                # Never leave an interface in the allow-all group: back to the isolation group, or where it was.
                for fallback in ([groups["isolation"]], eni["groups"]):
                    try:
                        set_interface_groups(ec2, instance_id, eni, fallback)
                        break
                    except ActionError:
                        continue
                raise ActionError(f"the move to the isolation group failed ({exc}); the interface was put back in "
                                  f"{', '.join(interface_groups(ec2, instance_id, eni))}") from None
            return f"{', '.join(eni['groups'])} → {groups['untrack']} (untrack) → {groups['isolation']} (isolation)"

        change(steps, f"network:{eni['id']}", f"Cut {eni['id']}, open connections included", dry_run=dry_run,
               plan=f"{', '.join(eni['groups'])} → untrack group → isolation group",
               already=lambda eni=eni: "in the isolation group alone"
               if groups["isolation"] and interface_groups(ec2, instance_id, eni) == [groups["isolation"]] else None,
               do=move)
    result.notes.extend(_still_tracked(aws, instance, record))


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
                notes.append(f"A network load balancer ({_short(lb)}) was in front: connections through it may stay tracked.")
    notes.append("ICMP flows stay tracked whatever the groups say; security groups never cut traffic inside the instance.")
    return notes


# -- credentials ------------------------------------------------------------------------------


def revoke_older_sessions(iam, role_name: str, dry_run: bool, steps: StepLog, *, since: str, name: str = "revoke-sessions") -> None:
    """An inline deny-all for the role's sessions issued before ``since`` (this request's start).

    A policy left by an earlier incident has an older cutoff: it is moved forward, or sessions
    issued between the two incidents would stay valid."""

    def skip() -> str | None:
        role = call(iam, "get_role", RoleName=role_name)["Role"]
        return "a service-linked role can't be changed" if role.get("Path", "").startswith("/aws-service-role/") else None

    cutoff = cutoff_time(since)

    def already() -> str | None:
        found = session_cutoff(iam, "get_role_policy", RoleName=role_name, PolicyName=REVOKE_POLICY)
        return f"sessions issued before {found} are denied already" if found and found >= cutoff else None

    def put() -> str:
        policy = {"Version": "2012-10-17", "Statement": [{
            "Sid": "IrbotRevokeOlderSessions", "Effect": "Deny", "Action": "*", "Resource": "*",
            "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}}}]}
        call(iam, "put_role_policy", RoleName=role_name, PolicyName=REVOKE_POLICY, PolicyDocument=json.dumps(policy))
        return f"sessions of {role_name} issued before {cutoff} are denied everything (every user of the role is affected)"

    change(steps, f"{name}:{role_name}", f"Revoke older sessions of role {role_name}", dry_run=dry_run,
           plan=f"inline deny-all for tokens issued before {cutoff}", skip=skip, already=already, do=put)


def _cut_credentials(aws: Clients, instance_id: str, record: dict, steps: StepLog, dry_run: bool, result: Result, since: str) -> None:
    profile = record["instance_profile"]

    def disassociate() -> str:
        current = _profile_association(aws.ec2, instance_id)
        call(aws.ec2, "disassociate_iam_instance_profile", AssociationId=current["association_id"])
        return f"{_short(current['arn'])} disassociated"

    change(steps, "instance-profile", "Disassociate its instance profile", dry_run=dry_run,
           plan=f"disassociate {_short(profile['arn'])}" if profile else "",
           skip=lambda: None if profile or _profile_association(aws.ec2, instance_id) else "no instance profile",
           already=lambda: None if _profile_association(aws.ec2, instance_id) else "no profile associated any more", do=disassociate)
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


# -- release ----------------------------------------------------------------------------------


@action("release", risk=Risk.CHANGE, summary="Undo an isolation, restoring what was recorded.", permissions=RELEASE_PERMISSIONS)
def release(session: boto3.Session, instance_id: str, region: str, *, dry_run: bool = False, on_step=None,
            context: RunContext = RunContext(), record: dict | None = None) -> Result:
    if not record:
        raise ActionError(f"irbot has no isolation record for {instance_id}: it was not isolated by irbot, so there is nothing to restore.")
    aws = Clients(session, region)
    _, instance = describe_instance(aws.ec2, instance_id)
    steps = StepLog(on_step)
    ec2 = aws.ec2

    # Attributes before groups: they don't depend on each other, and the network comes back last.
    def attribute(name: str):
        key = name[0].upper() + name[1:]
        return call(ec2, "describe_instance_attribute", InstanceId=instance_id, Attribute=name)[key]["Value"]

    protection, behaviour = record["termination_protection"], record["shutdown_behavior"]
    change(steps, "termination-protection", f"Put termination protection back ({'on' if protection else 'off'})", dry_run=dry_run,
           plan=f"DisableApiTermination → {str(protection).lower()}",
           already=lambda: "as recorded" if bool(attribute("disableApiTermination")) == protection else None,
           do=lambda: call(ec2, "modify_instance_attribute", InstanceId=instance_id, DisableApiTermination={"Value": protection}), done="restored")
    change(steps, "shutdown-behavior", f"Put shutdown behaviour back ({behaviour})", dry_run=dry_run, plan=f"→ {behaviour}",
           already=lambda: "as recorded" if attribute("instanceInitiatedShutdownBehavior") == behaviour else None,
           do=lambda: call(ec2, "modify_instance_attribute", InstanceId=instance_id, InstanceInitiatedShutdownBehavior={"Value": behaviour}), done="restored")

    def volumes_off_record() -> list[dict]:
        _, now = describe_instance(ec2, instance_id)
        recorded = {v["device"]: v["delete_on_termination"] for v in record["volumes"]}
        return [b for b in now.get("BlockDeviceMappings", []) if "Ebs" in b and b["DeviceName"] in recorded
                and b["Ebs"].get("DeleteOnTermination", False) != recorded[b["DeviceName"]]]

    def restore_volumes() -> str:
        recorded = {v["device"]: v["delete_on_termination"] for v in record["volumes"]}
        changed = volumes_off_record()
        call(ec2, "modify_instance_attribute", InstanceId=instance_id,
             BlockDeviceMappings=[{"DeviceName": b["DeviceName"], "Ebs": {"DeleteOnTermination": recorded[b["DeviceName"]]}} for b in changed])
        return f"{len(changed)} volumes restored"

    change(steps, "volumes", "Put DeleteOnTermination back on the volumes", dry_run=dry_run, plan="as recorded",
           already=lambda: None if volumes_off_record() else "as recorded", do=restore_volumes)

    group = record["auto_scaling_group"]
    change(steps, "auto-scaling", "Attach it to its Auto Scaling group again", dry_run=dry_run,
           plan=f"attach to {group} (its desired capacity grows by one)", skip=lambda: None if group else "it was in no Auto Scaling group",
           already=lambda: f"in {group}" if _auto_scaling_group(aws, instance_id) == group else None,
           do=lambda: call(aws.autoscaling, "attach_instances", InstanceIds=[instance_id], AutoScalingGroupName=group), done=f"attached to {group}")

    for membership in record["target_groups"]:
        target = {"Id": instance_id, **({"Port": membership["port"]} if membership["port"] else {})}
        arn = membership["arn"]
        change(steps, f"target-group:{_short(arn)}", f"Register it in {_short(arn)} again", dry_run=dry_run, plan=f"register port {membership['port']}",
               already=lambda arn=arn: "registered" if any(m["arn"] == arn for m in _target_groups(aws, instance_id)) else None,
               do=lambda arn=arn, target=target: call(aws.elbv2, "register_targets", TargetGroupArn=arn, Targets=[target]), done="registered")
    for name in record["classic_load_balancers"]:
        change(steps, f"classic-load-balancer:{name}", f"Register it behind {name} again", dry_run=dry_run, plan="register",
               already=lambda name=name: "registered" if name in _classic_load_balancers(aws, instance_id) else None,
               do=lambda name=name: call(aws.elb, "register_instances_with_load_balancer", LoadBalancerName=name,
                                         Instances=[{"InstanceId": instance_id}]), done="registered")

    profile = record["instance_profile"]
    change(steps, "instance-profile", "Associate its instance profile again", dry_run=dry_run,
           plan=f"associate {_short(profile['arn'])}" if profile else "", skip=lambda: None if profile else "it had no instance profile",
           already=lambda: "associated" if (_profile_association(ec2, instance_id) or {}).get("arn") == profile["arn"] else None,
           do=lambda: call(ec2, "associate_iam_instance_profile", IamInstanceProfile={"Arn": profile["arn"]}, InstanceId=instance_id), done="associated")

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
           already=lambda: "tagged released" if _tag(instance, STATUS_TAG) == "released" else None,
           do=retag, done=f"{STATUS_TAG}=released, Environment " + (f"= {environment}" if environment is not None else "removed"))
    result = Result("release", instance_id, region, steps=steps.steps)
    result.notes.append("Evidence stays as it is: snapshots, saved objects and the role's revoke-older-sessions policy (it only denies tokens issued before the isolation).")
    return result
