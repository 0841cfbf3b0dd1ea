"""Security groups and network interfaces: reading and moving an interface's groups, and groups
irbot keeps with exactly the rules it wants."""

from __future__ import annotations

from actions.aws import call
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.scopes import PURPOSE_TAG, holding
from actions.words import count

EVERYWHERE = ("0.0.0.0/0", "::/0")


def is_primary(eni: dict) -> bool:
    index = eni["device_index"] if "device_index" in eni else eni.get("Attachment", {}).get("DeviceIndex")
    return index in (0, None)


def interface_groups(ec2, instance_id: str, eni: dict) -> list[str]:
    """The groups on one interface now. The primary interface's are the instance's own groups."""
    if is_primary(eni):
        _, now = describe_instance(ec2, instance_id)
        return [g["GroupId"] for g in now.get("SecurityGroups", [])]
    found = call(ec2, "describe_network_interfaces", NetworkInterfaceIds=[eni["id"]])["NetworkInterfaces"][0]
    return [g["GroupId"] for g in found.get("Groups", [])]


def set_interface_groups(ec2, instance_id: str, eni: dict, groups: list[str]) -> None:
    # ModifyInstanceAttribute(Groups) is the primary interface's call; other interfaces have their own.
    if is_primary(eni):
        holding(ec2, instance_id, "modify_instance_attribute", InstanceId=instance_id, Groups=groups)
    else:
        holding(ec2, instance_id, "modify_network_interface_attribute", NetworkInterfaceId=eni["id"], Groups=groups)


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
                            TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": PURPOSE_TAG, "Value": name.split("-")[1]}]}])["GroupId"]
            verb = "created"
        except ActionError as exc:
            if exc.code != "InvalidGroup.Duplicate":
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
    return group["GroupId"], f"{verb} {name} ({group['GroupId']})" + (f", {count(fixes, 'rule')} set" if fixes else ""), verb == "created" or fixes > 0
