"""moto's IAM enforcement, told what AWS's authorization knows, for EC2 and IAM calls.

moto checks every call but S3's against Resource "*" and with no condition keys, so a policy that scopes a
call to some resources, or to tagged ones, can't be shown to work there: a statement naming resources never
matches, and one with a condition holds whatever the request. With ``authorizing_like_aws()`` on, an EC2 or
IAM call is checked as AWS checks it, as far as irbot's policies need:

- against each resource it acts on (the instance, its volumes, the security groups, the interface and its
  instance, the VPC, the volume and the instance it is attached to, the snapshot a volume is made from, the
  tagged resources, the role or user or policy an IAM call names), each with its tags as ``aws:ResourceTag/…``;
- with the request's keys: ``aws:RequestTag/…``, ``aws:TagKeys``, ``ec2:CreateAction`` (tags given as a
  group or a volume is made), ``iam:PolicyARN``;
- allowed only when every resource is allowed and no statement denies; a statement whose condition
  doesn't hold doesn't apply (where moto would deny); an operator it doesn't know fails the call loudly.

Other services, EC2 calls it doesn't know (CreateSnapshots, CopySnapshot and their tags among them), IAM
paths, and permissions boundaries keep moto's own check (or none). Used in the tests only.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re

from moto.ec2.models import ec2_backends
from moto.iam import access_control
from moto.utilities.utils import get_partition

PREFIXES = {"i": "instance", "sg": "security-group", "eni": "network-interface", "vpc": "vpc", "snap": "snapshot", "vol": "volume",
            "ami": "image", "subnet": "subnet"}
GROUP_RULES = ("AuthorizeSecurityGroupIngress", "AuthorizeSecurityGroupEgress", "RevokeSecurityGroupIngress", "RevokeSecurityGroupEgress")


class _Call:
    """What one request asks, read from its parameters and moto's state."""

    def __init__(self, request):
        self.request = request
        self.data = request._data
        self.partition = get_partition(request._region)
        self.account, self.region = request.account_id, request._region
        self.ec2 = ec2_backends[self.account][self.region] if request._service == "ec2" else None

    def one(self, name: str) -> str | None:
        value = self.data.get(name)
        return (value[0] if value else None) if isinstance(value, list) else value

    def indexed(self, prefix: str, suffix: str = "") -> list[str]:
        """Values of prefix.1<suffix>, prefix.2<suffix>, … (the query protocol's lists)."""
        found = []
        for key in self.data:
            match = re.fullmatch(re.escape(prefix) + r"\.(\d+)" + re.escape(suffix), key)
            if match:
                found.append((int(match.group(1)), self.one(key)))
        return [value for _, value in sorted(found)]

    def tags_of(self, prefix: str) -> dict[str, str]:
        """prefix.N.Key and prefix.N.Value, as a dict."""
        keys, values = self.indexed(prefix, ".Key"), self.indexed(prefix, ".Value")
        return dict(zip(keys, values + [""] * (len(keys) - len(values))))

    def ec2_resource(self, resource_id: str) -> tuple[str, dict]:
        kind = PREFIXES.get(resource_id.split("-", 1)[0], "unknown")
        owner = "" if kind == "snapshot" else self.account
        tags = self.ec2.tags.get(resource_id, {})  # EC2Backend is a TagBackend
        return f"arn:{self.partition}:ec2:{self.region}:{owner}:{kind}/{resource_id}", {f"aws:ResourceTag/{k}": v for k, v in tags.items()}

    def checks(self, action: str) -> list[tuple[str, str, dict]] | None:
        """(IAM action, resource ARN, condition keys) for each thing AWS would authorize; None: moto's own check."""
        name = action.split(":", 1)[1]
        if self.ec2 is not None:
            return self._ec2(action, name)
        if action.startswith("iam:"):
            return [(action, self._iam_resource() or "*", self._iam_keys())]
        return None

    def _ec2(self, action: str, name: str) -> list[tuple[str, str, dict]] | None:
        resources: list[tuple[str, dict]]
        keys: dict = {}
        if name == "ModifyInstanceAttribute":
            # the volumes of the devices a BlockDeviceMapping change names are resources of the call too
            instance = self.ec2.get_instance(self.one("InstanceId"))
            devices = self.indexed("BlockDeviceMapping", ".DeviceName")
            volumes = [instance.block_device_mapping[d].volume_id for d in devices if d in instance.block_device_mapping]
            resources = [self.ec2_resource(i) for i in [instance.id, *self.indexed("GroupId"), *volumes]]
        elif name == "ModifyNetworkInterfaceAttribute":
            interface = self.ec2.get_network_interface(self.one("NetworkInterfaceId"))
            attached = [interface.instance.id] if interface.instance else []
            resources = [self.ec2_resource(i) for i in [interface.id, *attached, *self.indexed("SecurityGroupId")]]
        elif name in GROUP_RULES:
            resources = [self.ec2_resource(self.one("GroupId"))]
        elif name in ("AssociateIamInstanceProfile", "DisassociateIamInstanceProfile"):
            instance = self.one("InstanceId") or next((i for i, a in self.ec2.iam_instance_profile_associations.items()
                                                      if a.association_id == self.one("AssociationId")), "i-unknown")
            resources = [self.ec2_resource(instance)]
        elif name == "CreateSecurityGroup":
            return self._new(action, "security-group", self.one("VpcId"))
        elif name == "CreateVolume":
            return self._new(action, "volume", self.one("SnapshotId"))
        elif name in ("AttachVolume", "DetachVolume"):
            # the instance: the one named, else (a detach may name none) the one the volume is attached to
            volume = self.ec2.volumes.get(self.one("VolumeId"))
            attached = volume.attachment.instance.id if volume is not None and volume.attachment else None
            resources = [self.ec2_resource(i) for i in [self.one("VolumeId"), self.one("InstanceId") or attached] if i]
        elif name == "DeleteVolume":
            resources = [self.ec2_resource(self.one("VolumeId"))]
        elif name in ("CreateTags", "DeleteTags"):
            tags = self.tags_of("Tag")
            keys = {"aws:TagKeys": list(tags)} if tags else {}
            if name == "CreateTags":
                keys.update({f"aws:RequestTag/{k}": v for k, v in tags.items()})
            resources = [self.ec2_resource(i) for i in self.indexed("ResourceId")]
        else:
            return None
        return [(action, arn, {**own, **keys}) for arn, own in resources]

    def _new(self, action: str, kind: str, source: str | None) -> list[tuple[str, str, dict]]:
        """A resource being made, with the request's tags, and the one it is made in or from (a VPC, a snapshot)."""
        tags = self.tags_of("TagSpecification.1.Tag")
        made = (f"arn:{self.partition}:ec2:{self.region}:{self.account}:{kind}/new",
                {**{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": list(tags)})
        checks = [(action, *made), *([(action, *self.ec2_resource(source))] if source else [])]
        # Tags given at creation are authorized as ec2:CreateTags on the new resource too, saying which call made it.
        return checks + ([("ec2:CreateTags", made[0], {**made[1], "ec2:CreateAction": action.split(":", 1)[1]})] if tags else [])

    def _iam_resource(self) -> str | None:
        prefix = f"arn:{self.partition}:iam::{self.account}"
        if self.one("RoleName"):
            return f"{prefix}:role/{self.one('RoleName')}"
        if self.one("UserName"):
            return f"{prefix}:user/{self.one('UserName')}"
        return self.one("PolicyArn")

    def _iam_keys(self) -> dict:
        return {"iam:PolicyARN": self.one("PolicyArn")} if self.one("PolicyArn") else {}


def _like(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _operator_holds(operator: str, actual, expected) -> bool:
    expected = expected if isinstance(expected, list) else [expected]
    if operator == "Null":
        return (actual is None) == (str(expected[0]).lower() == "true")
    quantifier, _, base = operator.rpartition(":")
    like = lambda v, e: _like(e, v)  # noqa: E731 (value, expected pattern)
    match = {"StringEquals": lambda v, e: v == e, "StringLike": like, "ArnEquals": lambda v, e: v == e, "ArnLike": like}.get(base)
    if match is None or quantifier not in ("", "ForAllValues", "ForAnyValue"):
        raise NotImplementedError(f"standins.moto_authorization does not know the condition operator {operator}")
    values = actual if isinstance(actual, list) else ([] if actual is None else [actual])
    if quantifier == "ForAllValues":
        return all(any(match(v, e) for e in expected) for v in values)
    return any(match(v, e) for v in values for e in expected)


def _applies(statement: dict, action: str, resource: str, keys: dict) -> bool:
    def matches(element: str, value: str, *, anycase: bool) -> bool:
        patterns = statement[element] if isinstance(statement[element], list) else [statement[element]]
        return any(_like(p.lower(), value.lower()) if anycase else _like(p, value) for p in patterns)

    if "Action" in statement and not matches("Action", action, anycase=True):
        return False
    if "NotAction" in statement and matches("NotAction", action, anycase=True):
        return False
    if "Resource" in statement and not matches("Resource", resource, anycase=False):
        return False
    if "NotResource" in statement and matches("NotResource", resource, anycase=False):
        return False
    return all(_operator_holds(op, keys.get(key), expected)
               for op, pairs in statement.get("Condition", {}).items() for key, expected in pairs.items())


def _allowed(documents: list[dict], action: str, resource: str, keys: dict) -> bool:
    statements = [s for d in documents for s in (d["Statement"] if isinstance(d["Statement"], list) else [d["Statement"]])]
    applying = [s for s in statements if _applies(s, action, resource, keys)]
    return not any(s["Effect"] == "Deny" for s in applying) and any(s["Effect"] == "Allow" for s in applying)


@contextlib.contextmanager
def authorizing_like_aws():
    original = access_control.IAMRequest.check_action_permitted

    def check_action_permitted(self, resource: str) -> None:
        checks = _Call(self).checks(self._action) if resource == "*" else None
        if checks is None:
            return original(self, resource)
        documents = [access_control.IAMPolicy(p)._policy_json for p in self._access_key.collect_policies()]
        if not all(_allowed(documents, action, arn, keys) for action, arn, keys in checks):
            self._raise_access_denied()

    access_control.IAMRequest.check_action_permitted = check_action_permitted
    try:
        yield
    finally:
        access_control.IAMRequest.check_action_permitted = original
