"""Where irbot's riskier permissions hold: an action declares every call it makes (its ``permissions``), and
the policy grants a call listed here only on these resources and under these conditions, never on "*".

The tags are irbot's own: it makes its isolation groups and its workstation volumes with ``irbot:purpose``, and
tags an instance ``irbot:status=quarantine`` before it changes any of the instance's attributes (isolate tags
first; release tags again first, should the tag have gone, and writes ``released`` last). So stolen credentials
can't open somebody else's security group, or rewrite the attributes of an instance irbot doesn't hold, without
first writing irbot's tags where everyone can see them. What they can still do is in the README's security notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from actions.aws import call
from actions.errors import ActionError

STATUS_TAG = "irbot:status"
PURPOSE_TAG = "irbot:purpose"
GROUP_PURPOSES = ("untrack", "isolation")
WORKSTATION_PURPOSE = "workstation"  # a volume irbot made from a snapshot for the forensic workstation
# The deployment tags its forensic workstation irbot:role=workstation; irbot can't write that tag (it is not among INSTANCE_TAGS).
ROLE_TAG = "irbot:role"
QUARANTINE_POLICY = "irbot-quarantine"


@dataclass(frozen=True)
class Scope:
    """One policy statement of its own for some calls: on ``resources`` (``{partition}`` filled in), when ``condition``."""

    sid: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: dict = field(default_factory=dict)

    def statement(self, actions: list[str], partition: str) -> dict:
        def filled(value):
            if isinstance(value, dict):
                return {k: filled(v) for k, v in value.items()}
            if isinstance(value, list):
                return [filled(v) for v in value]
            return value.replace("{partition}", partition) if isinstance(value, str) else value

        resources = filled(list(self.resources))
        return {"Sid": self.sid, "Effect": "Allow", "Action": actions, "Resource": resources[0] if len(resources) == 1 else resources,
                **({"Condition": filled(self.condition)} if self.condition else {})}


def _ec2(kind: str) -> str:
    return f"arn:{{partition}}:ec2:*:*:{kind}/*"


# The tags irbot writes after a resource exists (on instances, and on its own snapshots). irbot:purpose is not
# among them: it marks irbot's own groups, and is written only as a group is made.
INSTANCE_TAGS = ("irbot:status", "irbot:incident", "irbot:requester", "irbot:approver", "irbot:isolated-at", "irbot:released-at",
                 "irbot:volume", "Environment")

SCOPES = (
    # An instance's attributes and instance profile, and which groups its interfaces get: only while irbot's tag
    # says irbot holds the instance.
    Scope("QuarantinedInstances",
          ("ec2:ModifyInstanceAttribute", "ec2:ModifyNetworkInterfaceAttribute", "ec2:AssociateIamInstanceProfile",
           "ec2:DisassociateIamInstanceProfile"),
          (_ec2("instance"),), {"StringEquals": {f"aws:ResourceTag/{STATUS_TAG}": "quarantine"}}),
    # What such an instance is given or keeps: irbot's groups while isolated, the recorded ones (anybody's) on
    # release, its interfaces and volumes (DeleteOnTermination).
    Scope("WhatAnInstanceHas", ("ec2:ModifyInstanceAttribute", "ec2:ModifyNetworkInterfaceAttribute"),
          (_ec2("security-group"), _ec2("network-interface"), _ec2("volume"))),
    # Rules only in irbot's own groups: nobody else's group can be opened to the world with these credentials.
    Scope("OwnGroupRules", ("ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
                                 "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress"),
          (_ec2("security-group"),), {"StringEquals": {f"aws:ResourceTag/{PURPOSE_TAG}": list(GROUP_PURPOSES)}}),
    # The rules themselves, when AWS names them too: the group they are in is checked above, always.
    Scope("OwnGroupRuleIds", ("ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
                                   "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress"), (_ec2("security-group-rule"),)),
    # New groups only as irbot's own, tagged as they are made; in any VPC.
    Scope("NewOwnGroups", ("ec2:CreateSecurityGroup",), (_ec2("security-group"),),
          {"StringEquals": {f"aws:RequestTag/{PURPOSE_TAG}": list(GROUP_PURPOSES)}}),
    Scope("GroupsInAnyVpc", ("ec2:CreateSecurityGroup",), (_ec2("vpc"),)),
    # Tags given as a group, a snapshot or a volume is made (the snapshot copies its volume's): only then.
    Scope("TagsAtCreation", ("ec2:CreateTags",), (_ec2("security-group"), "arn:{partition}:ec2:*::snapshot/*", _ec2("volume")),
          {"StringEquals": {"ec2:CreateAction": ["CreateSecurityGroup", "CreateSnapshots", "CopySnapshot", "CreateVolume"]}}),
    # The forensic workstation's volumes (/ir workstation): made only as irbot's, tagged as they are made, from any snapshot
    # (a responder may name anyone's); attached, detached and deleted only while they carry that tag, which can't be
    # written on a volume afterwards. So these credentials can't delete or move anybody else's volume.
    Scope("NewWorkstationVolumes", ("ec2:CreateVolume",), (_ec2("volume"),),
          {"StringEquals": {f"aws:RequestTag/{PURPOSE_TAG}": WORKSTATION_PURPOSE}}),
    Scope("WorkstationVolumes", ("ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"), (_ec2("volume"),),
          {"StringEquals": {f"aws:ResourceTag/{PURPOSE_TAG}": WORKSTATION_PURPOSE}}),
    # Attached only to an instance the deployment tagged as the workstation, not instance/*: irbot may make a volume of any
    # snapshot, so with instance/* a thief of its credentials could attach a copy of any disk to an instance they run.
    Scope("TheWorkstation", ("ec2:AttachVolume",), (_ec2("instance"),), {"StringEquals": {f"aws:ResourceTag/{ROLE_TAG}": WORKSTATION_PURPOSE}}),
    # What those volumes are made from and detached from: any snapshot, any instance (the volume is checked above), so
    # --detach still cleans up if the workstation lost its tag.
    Scope("VolumeSources", ("ec2:CreateVolume", "ec2:DetachVolume"), ("arn:{partition}:ec2:*::snapshot/*", _ec2("instance"))),
    # Afterwards, only irbot's own tag keys on instances and snapshots; never "delete every tag".
    Scope("OwnTags", ("ec2:CreateTags", "ec2:DeleteTags"), (_ec2("instance"), "arn:{partition}:ec2:*::snapshot/*"),
          {"ForAllValues:StringEquals": {"aws:TagKeys": list(INSTANCE_TAGS)}, "Null": {"aws:TagKeys": "false"}}),
    # A snapshot's blocks (its whole disk) only once it is tagged for an incident: /ir image tags it first (IrbotOwnTags).
    Scope("TaggedSnapshotReads", ("ebs:ListSnapshotBlocks", "ebs:GetSnapshotBlock"), ("arn:{partition}:ec2:*::snapshot/*",),
          {"Null": {"aws:ResourceTag/irbot:incident": "false"}}),
    # A compromised user gets the quarantine policy the deployment made, which irbot can't edit: no free-form policy writes.
    Scope("AttachQuarantine", ("iam:AttachUserPolicy",), ("arn:{partition}:iam::*:user/*",),
          {"ArnLike": {"iam:PolicyARN": f"arn:{{partition}}:iam::*:policy/{QUARANTINE_POLICY}"}}),
)
def example(scope: Scope, partition: str, account: str, region: str) -> tuple[list[str], list[dict]]:
    """A resource of each kind ``scope`` names and the context its condition wants, for IAM's policy simulator
    (irbot doctor): asked about a scoped call with no resource or context, the simulator says it is denied."""
    statement = scope.statement(list(scope.actions), partition)
    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
    named = [r.replace("ec2:*:*:", f"ec2:{region}:{account}:").replace("ec2:*::", f"ec2:{region}::").replace("iam::*:", f"iam::{account}:")
             .removesuffix("/*") + "/irbot-doctor" if r != "*" else r for r in resources]
    entries = []
    conditions = statement.get("Condition", {})
    given = {key for operator, pairs in conditions.items() if operator != "Null" for key in pairs}
    for key, null in conditions.get("Null", {}).items():
        if null == "false" and key not in given:  # only "the key is there": any value says so
            entries.append({"ContextKeyName": key, "ContextKeyValues": ["irbot-doctor"], "ContextKeyType": "string"})
    for operator, pairs in conditions.items():
        if operator == "Null":
            continue  # the other operator gives the key
        for key, value in pairs.items():
            values = value if isinstance(value, list) else [value]
            many = operator.startswith(("ForAllValues", "ForAnyValue"))
            values = [v.replace("*", account) for v in (values if many else values[:1])]
            entries.append({"ContextKeyName": key, "ContextKeyValues": values,
                            "ContextKeyType": "stringList" if many else "arn" if operator.startswith("Arn") else "string"})
    return named, entries


SCOPED = frozenset(a for scope in SCOPES for a in scope.actions)


def scoped_statements(permissions: set[str], partition: str) -> list[dict]:
    """The statements that grant ``permissions``' scoped calls (the rest go unscoped into the action statement)."""
    statements = []
    for scope in SCOPES:
        wanted = sorted(a for a in scope.actions if a in permissions)
        if wanted:
            statements.append(scope.statement(wanted, partition))
    return statements


REFUSED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})


def holding(ec2, instance_id: str, operation: str, **params) -> dict:
    """``operation`` on a quarantined instance. Refused, it tags the instance again and tries once more: a suspect
    can delete the tag between two steps (and a fresh tag may take a moment to count), and an interface left
    in the allow-all group, or a profile left on, must not stay so for want of it."""
    try:
        return call(ec2, operation, **params)
    except ActionError as exc:
        if exc.code not in REFUSED:
            raise
        try:
            call(ec2, "create_tags", Resources=[instance_id], Tags=[{"Key": STATUS_TAG, "Value": "quarantine"}])
        except ActionError:
            raise exc from None
        return call(ec2, operation, **params)
