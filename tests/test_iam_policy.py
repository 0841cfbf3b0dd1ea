"""What `irbot iam-policy` prints: complete for what AWS checks on irbot's behalf, in the right partition, for
a real bucket name, and denying irbot's credentials the calls that would raise them."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys

import pytest

import bot.policies
from actions import registry
from actions.scopes import SCOPED
from bot.policies import (IAM_WRITES, MANAGED_POLICY_LIMIT, POLICY_PARTS, READ_WILDCARDS, Protected, boundary_document, member_policies, policy_document,
                          read_wildcards)
from core.evidence import STAGE_PERMISSIONS
from core.settings import ConfigError

BREAK_GLASS = "arn:aws:iam::123456789012:role/break-glass"
# What the Deny named call by call before it named verbs: each still denied. (iam:AddUserToGroup and
# iam:RemoveUserFromGroup were named too, but IAM authorizes them on the group, so they never matched these ARNs.)
DENIED_BY_NAME = (
    "iam:AttachRolePolicy", "iam:AttachUserPolicy", "iam:CreateAccessKey", "iam:CreateLoginProfile", "iam:DeleteAccessKey",
    "iam:DeleteLoginProfile", "iam:DeleteRole", "iam:DeleteUser", "iam:DeleteRolePermissionsBoundary", "iam:DeleteRolePolicy",
    "iam:DeleteUserPermissionsBoundary", "iam:DeleteUserPolicy", "iam:DetachRolePolicy", "iam:DetachUserPolicy",
    "iam:PutRolePermissionsBoundary", "iam:PutRolePolicy", "iam:PutUserPermissionsBoundary", "iam:PutUserPolicy", "iam:UpdateAccessKey",
    "iam:UpdateAssumeRolePolicy", "iam:UpdateLoginProfile", "iam:TagRole", "iam:UntagRole", "iam:TagUser", "iam:UntagUser",
    # on irbot's own managed policies
    "iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion",
)


def iam_policy(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("IR_", "AWS_"))} | env
    return subprocess.run([sys.executable, "-m", "bot.cli", "iam-policy", *args], capture_output=True, text=True, env=environment, timeout=60)


def by_sid(document: dict) -> dict:
    return {s["Sid"]: s for s in document["Statement"]}


def every_part(bucket: str, **options) -> dict:
    """What irbot's own role holds, its managed policies' statements as one document (POLICY_PARTS)."""
    return {"Version": "2012-10-17", "Statement": [s for part in POLICY_PARTS for s in policy_document(bucket, part=part, **options)["Statement"]]}


def scoped_by_sid(bucket: str, **options) -> dict:
    """The statements of every part by name, the core's last (its AnyResource is the one of every process)."""
    return {s["Sid"]: s for part in reversed(list(POLICY_PARTS)) for s in policy_document(bucket, part=part, **options)["Statement"]}


def names(statement: dict, action: str) -> bool:
    """Whether ``statement`` names ``action``, by name or by a wildcard (IAM matches actions ignoring case)."""
    patterns = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in patterns)


def test_what_aws_checks_on_irbots_behalf_is_granted_with_its_condition_only():
    statements = by_sid(policy_document("ir-evidence"))
    # release gives the instance profile back: its role may be passed to EC2 and nothing else
    assert statements["PassRoleToEc2"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not any(names(s, "iam:PassRole") for sid, s in statements.items() if sid != "PassRoleToEc2")
    # snapshot --copy-to-kms: EC2 uses the key, through EC2 only
    assert {"kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext"} <= set(statements["KmsThroughEc2"]["Action"])
    assert statements["KmsThroughEc2"]["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
    # the findings consumer's queue calls, the dead-letter queue's send included
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"} <= set(statements["AnyResource"]["Action"])
    # one action alone shows its grants too (compromise takes snapshot's)
    assert "KmsThroughEc2" in by_sid(policy_document("ir-evidence", action="compromise"))


def test_irbots_credentials_are_denied_what_would_raise_them_on_its_own_roles_and_the_break_glass_principals():
    statements = by_sid(policy_document("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,))))
    deny = statements["NoEscalation"]
    assert deny["Effect"] == "Deny" and [a for a in DENIED_BY_NAME if not names(deny, a)] == []
    assert deny["Resource"] == ["arn:aws:iam::*:role/irbot", "arn:aws:iam::*:role/irbot-responder", "arn:aws:iam::*:policy/irbot*", BREAK_GLASS]
    assert not names(deny, "iam:PassRole") and not names(deny, "iam:GetRole")  # release passes roles; reading is no escalation
    # revoke-key writes no policy onto a user: it attaches the deployment's quarantine policy, and only that one
    assert not any(names(s, "iam:PutUserPolicy") for s in statements.values() if s["Effect"] == "Allow")
    assert [sid for sid, s in statements.items() if names(s, "iam:AttachUserPolicy") and s["Effect"] == "Allow"] == ["AttachQuarantine"]
    assert statements["AttachQuarantine"]["Condition"] == {"ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/irbot-quarantine"}}
    assert "iam:UpdateAccessKey" in statements["AnyResource"]["Action"]
    # the member role denies itself the same, and irbot's own role by name
    member = by_sid(member_policies("arn:aws:iam::123456789012:role/ir/irbot-hub", break_glass=(BREAK_GLASS,))["PermissionsPolicy"])
    assert member["NoEscalation"]["Resource"] == ["arn:aws:iam::*:role/irbot-hub", "arn:aws:iam::*:role/irbot-responder",
                                                  "arn:aws:iam::*:policy/irbot*", BREAK_GLASS]
    # the boundary: every call any part allows, and the same denies, so a self-granted Allow adds no call
    boundary = boundary_document("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,)))
    parts = every_part("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,)))
    assert [s for s in boundary["Statement"] if s["Effect"] == "Deny"] == [statements["NoEscalation"]]
    [ceiling] = [s for s in boundary["Statement"] if s["Effect"] == "Allow"]
    assert ceiling["Resource"] == "*" and "Condition" not in ceiling
    assert sorted({a for s in parts["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}) == ceiling["Action"]
    assert not any(names(ceiling, a) for a in ("iam:PutUserPolicy", "iam:CreateUser", "s3:PutBucketPolicy", "ec2:RunInstances"))
    # one action's policy carries the denies too, when it writes IAM (revoke-key does)
    assert "NoEscalation" in by_sid(policy_document("ir-evidence", action="revoke-key"))
    assert "NoEscalation" not in by_sid(policy_document("ir-evidence", action="stop"))  # no IAM at all


def test_the_partition_follows_the_region_or_the_option_and_a_bucket_is_required_and_checked():
    gov = iam_policy("--bucket", "ir-evidence", AWS_REGION="us-gov-west-1")
    assert gov.returncode == 0, gov.stderr
    resources = json.dumps(json.loads(gov.stdout))
    assert "arn:aws-us-gov:s3:::ir-evidence" in resources and "arn:aws:" not in resources
    china = json.loads(iam_policy("--bucket", "ir-evidence", "--partition", "aws-cn").stdout)
    assert "arn:aws-cn:iam::*:role/irbot-responder" in json.dumps(china) and "arn:aws:" not in json.dumps(china)
    for args, said in [((), "iam-policy needs the evidence bucket"), (("--bucket", "Bad_Bucket!"), "is not an S3 bucket name"),
                       (("--bucket", "192.168.1.1"), "is not an S3 bucket name"), (("--bucket", "ir-evidence", "--protect", "root"), "--protect takes role or user ARNs")]:
        refused = iam_policy(*args)
        assert refused.returncode == 2 and said in refused.stderr and not refused.stdout and "Traceback" not in refused.stderr
    with pytest.raises(ConfigError):
        policy_document("ir..evidence")


def test_what_changes_instances_groups_and_tags_is_granted_only_on_irbots_own():
    statements = scoped_by_sid("ir-evidence", partition="aws-cn")
    unscoped = statements["AnyResource"]
    assert not any(names(unscoped, a) for a in ("ec2:ModifyInstanceAttribute", "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateSecurityGroup",
                                                "ec2:CreateTags", "ec2:DisassociateIamInstanceProfile", "iam:AttachUserPolicy"))
    assert statements["QuarantinedInstances"]["Resource"] == "arn:aws-cn:ec2:*:*:instance/*"
    assert statements["QuarantinedInstances"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:status": "quarantine"}}
    assert statements["OwnGroupRules"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:purpose": ["untrack", "isolation"]}}
    assert statements["NewOwnGroups"]["Condition"] == {"StringEquals": {"aws:RequestTag/irbot:purpose": ["untrack", "isolation"]}}
    assert "irbot:purpose" not in statements["OwnTags"]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]  # only as a group is made
    assert statements["TagsAtCreation"]["Condition"] == {"StringEquals": {"ec2:CreateAction": ["CreateSecurityGroup", "CreateSnapshots",
                                                                                                    "CopySnapshot", "CreateVolume"]}}
    # the workstation's volumes: made only tagged as irbot's, then moved and deleted only while so tagged, attached only to the
    # instance the deployment tagged as the workstation
    assert not any(names(unscoped, a) for a in ("ec2:CreateVolume", "ec2:AttachVolume", "ec2:DetachVolume", "ec2:DeleteVolume"))
    assert statements["NewWorkstationVolumes"]["Condition"] == {"StringEquals": {"aws:RequestTag/irbot:purpose": "workstation"}}
    assert statements["WorkstationVolumes"]["Resource"] == "arn:aws-cn:ec2:*:*:volume/*"
    assert statements["WorkstationVolumes"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:purpose": "workstation"}}
    assert statements["TheWorkstation"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:role": "workstation"}}
    # one action's policy: stop changes no tag, so it gets no tag statement; isolate gets every one it needs
    assert "OwnTags" not in by_sid(policy_document("ir-evidence", action="stop"))
    assert {"QuarantinedInstances", "WhatAnInstanceHas", "OwnGroupRules", "NewOwnGroups", "OwnTags"} <= set(
        by_sid(policy_document("ir-evidence", action="isolate")))


def test_irbot_may_delete_only_the_stages_streams_are_written_to_never_evidence():
    for document in (policy_document("ir-evidence", partition="aws-cn"), policy_document("ir-evidence", process="worker", partition="aws-cn")):
        statements = by_sid(document)
        assert statements["EvidenceStages"] == {"Sid": "EvidenceStages", "Effect": "Allow", "Resource": "arn:aws-cn:s3:::ir-evidence/staging/*",
                                                     "Action": ["s3:BypassGovernanceRetention", "s3:DeleteObject", "s3:DeleteObjectVersion"]}
        assert [sid for sid, s in statements.items() if any(names(s, a) for a in STAGE_PERMISSIONS)] == ["EvidenceStages"]
    assert "EvidenceStages" not in by_sid(policy_document("ir-evidence", process="serve"))  # the bot writes no stream


# parliament wants each statement to name the resource type an action requires. AWS authorizes each resource
# of a request on its own, so an instance (scoped by irbot's tag) and the groups, interfaces and volumes it has
# (anybody's, on release), a group (by tag) and its rules, a new group and its VPC, a workstation volume (by tag), the
# snapshot it is made from and the instance it is attached to (the workstation, by the deployment's tag) are granted in
# separate statements; the statements without the required type are the "mismatch". README: security notes.
SEPARATE_RESOURCES = {"ec2:ModifyInstanceAttribute", "ec2:ModifyNetworkInterfaceAttribute", "ec2:CreateSecurityGroup",
                      "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
                      "ec2:RevokeSecurityGroupIngress", "ec2:CreateVolume", "ec2:AttachVolume", "ec2:DetachVolume"}


def test_parliament_finds_nothing_wrong_but_actions_on_any_resource_and_resources_granted_apart():
    """parliament (PyPI) over every generated policy: unknown actions, malformed conditions and statements fail here.
    RESOURCE_STAR (actions on "*": the describes, and calls on whatever instance, key or account an incident is
    about) is explained in the README's security notes."""
    parliament = pytest.importorskip("parliament")
    documents = [policy_document("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,))),
                 *(policy_document("ir-evidence", process=p) for p in ("serve", "worker", "findings", "audit")),
                 member_policies("arn:aws:iam::123456789012:role/irbot", external_id="x-1")["PermissionsPolicy"]]
    for document in documents:
        findings = [f for f in parliament.analyze_policy_string(json.dumps(document)).findings if f.issue != "RESOURCE_STAR"
                    and not (f.issue == "RESOURCE_MISMATCH" and {d["action"] for d in f.detail} <= SEPARATE_RESOURCES)]
        assert findings == [], [(f.issue, f.detail) for f in findings]


def test_the_quarantine_policy_printed_is_the_one_the_templates_make():
    from bot.templates import hub_template, member_template

    printed = iam_policy("--quarantine")
    assert printed.returncode == 0, printed.stderr
    document = json.loads(printed.stdout)
    for template in (hub_template(), member_template()):
        made = template["Resources"]["QuarantinePolicy"]["Properties"]
        assert made["ManagedPolicyName"] == "irbot-quarantine" and made["PolicyDocument"] == document
    assert {"iam:CreateAccessKey", "sts:GetFederationToken"} <= set(document["Statement"][0]["Action"])


# The worst cases for length: the longest bucket name S3 allows, the longest partition name, three break-glass principals.
LONGEST_BUCKET = "ir-evidence-" + "x" * 51
GOV_BREAK_GLASS = ("arn:aws-us-gov:iam::123456789012:role/incident-response/break-glass-administrator",
                   "arn:aws-us-gov:iam::123456789012:user/incident-response/break-glass-responder-one",
                   "arn:aws-us-gov:iam::123456789012:user/incident-response/break-glass-responder-two")


def characters(document: dict) -> int:
    """A policy's length as IAM counts it against its limit: the JSON without whitespace."""
    return len(json.dumps(document, separators=(",", ":")))


def test_every_managed_policy_fits_iams_limit_in_the_worst_case():
    assert len(LONGEST_BUCKET) == 63
    protected = Protected(break_glass=GOV_BREAK_GLASS)
    common = {"partition": "aws-us-gov", "organization": True, "protected": protected}
    documents = {**{name: policy_document(LONGEST_BUCKET, part=part, **common) for part, name in POLICY_PARTS.items()},
                 "boundary": boundary_document(LONGEST_BUCKET, **common),
                 **{p: policy_document(LONGEST_BUCKET, process=p, **common) for p in ("serve", "worker", "findings", "audit")},
                 **{a: policy_document(LONGEST_BUCKET, action=a, **common) for a in registry.REGISTRY},
                 "member": member_policies("arn:aws-us-gov:iam::123456789012:role/irbot", break_glass=GOV_BREAK_GLASS)["PermissionsPolicy"]}
    too_long = {name: characters(d) for name, d in documents.items() if characters(d) > MANAGED_POLICY_LIMIT}
    assert too_long == {}
    # and as the CLI prints them, the break-glass principals from --protect
    for extra in ((), ("--boundary",), *(("--part", part) for part in POLICY_PARTS)):
        printed = iam_policy("--bucket", LONGEST_BUCKET, "--partition", "aws-us-gov", "--protect", ",".join(GOV_BREAK_GLASS), *extra,
                             IR_ACCOUNTS="org")
        assert printed.returncode == 0, printed.stderr
        document = json.loads(printed.stdout)
        denies = any(s["Sid"] == "NoEscalation" for s in document["Statement"])  # a part with no IAM call has no Deny to carry
        assert (GOV_BREAK_GLASS[2] in json.dumps(document)) == denies and characters(document) <= MANAGED_POLICY_LIMIT, extra


def test_only_read_verbs_are_wildcards_in_what_is_allowed():
    worst = [every_part(LONGEST_BUCKET, partition="aws-us-gov", organization=True),
             member_policies("arn:aws-us-gov:iam::123456789012:role/irbot")["PermissionsPolicy"]]
    for document in worst:
        for statement in document["Statement"]:
            wildcards = [a for a in statement["Action"] if "*" in a] if statement["Effect"] == "Allow" else []
            assert wildcards == [] or statement["Sid"] == "AnyResource", statement
            for wildcard in wildcards:
                service, _, verb = wildcard.partition(":")
                assert verb.endswith("*") and "*" not in verb[:-1], wildcard
                assert verb[:-1] in READ_WILDCARDS.get(service, ()) and verb.startswith(("Describe", "Get", "List")), wildcard
        # every call the actions declare is still granted, the scoped ones only by their own statements
        allowed = [s for s in document["Statement"] if s["Effect"] == "Allow"]
        assert [p for p in registry.permissions() if p != "sts:GetCallerIdentity" and not any(names(s, p) for s in allowed)] == []
        assert [p for p in SCOPED for s in document["Statement"] if s["Sid"] == "AnyResource" and names(s, p)] == []


def test_read_calls_become_their_verbs_wildcard_and_nothing_else_does(monkeypatch):
    calls = ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:GetConsoleOutput", "ec2:GetPasswordData", "ec2:CreateSnapshots",
             "iam:GetRole", "iam:ListAccessKeys", "iam:PutRolePolicy", "iam:UpdateAccessKey", "lambda:ListFunctions", "lambda:GetFunction",
             "s3:GetBucketPolicy", "s3:GetObject", "s3:ListBucket", "sts:GetAccessKeyInfo", "ebs:GetSnapshotBlock", "cloudtrail:LookupEvents"]
    assert read_wildcards(calls) == ["cloudtrail:LookupEvents", "ebs:GetSnapshotBlock", "ec2:CreateSnapshots", "ec2:Describe*",
                                     "ec2:GetConsoleOutput", "ec2:GetPasswordData", "iam:Get*", "iam:List*", "iam:PutRolePolicy",
                                     "iam:UpdateAccessKey", "lambda:GetFunction", "lambda:List*", "s3:GetBucket*", "s3:GetObject",
                                     "s3:ListBucket", "sts:GetAccessKeyInfo"]
    # a new read call costs nothing
    assert read_wildcards([*calls, "ec2:DescribeVpcs", "iam:ListRoles"]) == read_wildcards(calls)
    # a call that some scope grants only on its resources is never swallowed by a wildcard on "*"
    monkeypatch.setattr(bot.policies, "SCOPED", SCOPED | {"ec2:DescribeVolumes"})
    assert {"ec2:DescribeInstances", "ec2:DescribeVolumes"} <= set(read_wildcards(calls))


def test_read_wildcards_cover_only_reads_and_the_deny_every_iam_write_on_roles_users_and_policies():
    """Against parliament's copy of AWS's service authorization reference: what each wildcard stands for today."""
    definition = {service["prefix"]: service["privileges"] for service in pytest.importorskip("parliament").iam_definition}
    for service, verbs in READ_WILDCARDS.items():
        for verb in verbs:
            levels = {p["privilege"]: p["access_level"] for p in definition[service] if p["privilege"].startswith(verb)}
            assert levels and set(levels.values()) <= {"Read", "List"}, (service, verb, levels)
    writes = {f"iam:{p['privilege']}" for p in definition["iam"] if p["access_level"] in ("Write", "Permissions management", "Tagging")
              and {r["resource_type"].rstrip("*") for r in p["resource_types"]} & {"role", "user", "policy"}}
    deny = {"Action": list(IAM_WRITES)}
    assert sorted(a for a in writes - {"iam:PassRole"} if not names(deny, a)) == []
    # and no verb that stands for no such write, nor for a read
    assert [w for w in IAM_WRITES if not any(fnmatch.fnmatchcase(a, w) for a in writes)] == []
    reads = [f"iam:{p['privilege']}" for p in definition["iam"] if p["access_level"] in ("Read", "List")]
    assert [a for a in reads if names(deny, a)] == []
