"""What `irbot iam-policy` prints: complete for what AWS checks on irbot's behalf, in the right partition, for
a real bucket name, and denying irbot's credentials the calls that would raise them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bot.policies import ESCALATION, Protected, boundary_document, member_policies, policy_document
from core.settings import ConfigError

BREAK_GLASS = "arn:aws:iam::123456789012:role/break-glass"


def iam_policy(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("IR_", "AWS_"))} | env
    return subprocess.run([sys.executable, "-m", "bot.cli", "iam-policy", *args], capture_output=True, text=True, env=environment, timeout=60)


def by_sid(document: dict) -> dict:
    return {s["Sid"]: s for s in document["Statement"]}


def test_what_aws_checks_on_irbots_behalf_is_granted_with_its_condition_only():
    statements = by_sid(policy_document("ir-evidence"))
    # release gives the instance profile back: its role may be passed to EC2 and nothing else
    assert statements["IrbotPassRoleToEc2"]["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    assert not any("iam:PassRole" in s["Action"] for sid, s in statements.items() if sid != "IrbotPassRoleToEc2")
    # snapshot --copy-to-kms: EC2 uses the key, through EC2 only
    assert {"kms:CreateGrant", "kms:GenerateDataKeyWithoutPlaintext"} <= set(statements["IrbotKmsThroughEc2"]["Action"])
    assert statements["IrbotKmsThroughEc2"]["Condition"] == {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
    # the findings consumer's queue calls, the dead-letter queue's send included
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"} <= set(statements["IrbotQueues"]["Action"])
    # one action alone shows its grants too (compromise takes snapshot's)
    assert "IrbotKmsThroughEc2" in by_sid(policy_document("ir-evidence", action="compromise"))


def test_irbots_credentials_are_denied_what_would_raise_them_on_its_own_roles_and_the_break_glass_principals():
    statements = by_sid(policy_document("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,))))
    deny = statements["IrbotNoEscalation"]
    assert deny["Effect"] == "Deny" and {"iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:PutUserPolicy", "iam:AttachUserPolicy",
                                         "iam:UpdateAccessKey", "iam:PutRolePermissionsBoundary", "iam:UpdateAssumeRolePolicy"} <= set(deny["Action"])
    assert deny["Resource"] == ["arn:aws:iam::*:role/irbot", "arn:aws:iam::*:role/irbot-responder", BREAK_GLASS]
    assert statements["IrbotOwnPolicies"] == {"Sid": "IrbotOwnPolicies", "Effect": "Deny", "Resource": "arn:aws:iam::*:policy/irbot*",
                                              "Action": ["iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion",
                                                         "iam:SetDefaultPolicyVersion"]}
    # revoke-key writes no policy onto a user: it attaches the deployment's quarantine policy, and only that one
    assert not any("iam:PutUserPolicy" in s["Action"] for s in statements.values() if s["Effect"] == "Allow")
    assert [sid for sid, s in statements.items() if "iam:AttachUserPolicy" in s["Action"] and s["Effect"] == "Allow"] == ["IrbotAttachQuarantine"]
    assert statements["IrbotAttachQuarantine"]["Condition"] == {"ArnLike": {"iam:PolicyARN": "arn:aws:iam::*:policy/irbot-quarantine"}}
    assert "iam:UpdateAccessKey" in statements["IrbotActions"]["Action"]
    # the member role denies itself the same, and irbot's own role by name
    member = by_sid(member_policies("arn:aws:iam::123456789012:role/ir/irbot-hub", break_glass=(BREAK_GLASS,))["PermissionsPolicy"])
    assert member["IrbotNoEscalation"]["Resource"] == ["arn:aws:iam::*:role/irbot-hub", "arn:aws:iam::*:role/irbot-responder", BREAK_GLASS]
    # the boundary: the same allows and denies, so a self-granted Allow adds nothing
    assert boundary_document("ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,))) == policy_document(
        "ir-evidence", protected=Protected(break_glass=(BREAK_GLASS,)))
    assert set(ESCALATION) >= {"iam:CreateAccessKey", "iam:DeleteRolePermissionsBoundary", "iam:DeleteAccessKey", "iam:DeleteLoginProfile"}
    # one action's policy carries the denies too, when it writes IAM (revoke-key does)
    assert "IrbotNoEscalation" in by_sid(policy_document("ir-evidence", action="revoke-key"))
    assert "IrbotNoEscalation" not in by_sid(policy_document("ir-evidence", action="stop"))  # no IAM at all


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
    statements = by_sid(policy_document("ir-evidence", partition="aws-cn"))
    unscoped = set(statements["IrbotActions"]["Action"])
    assert not unscoped & {"ec2:ModifyInstanceAttribute", "ec2:AuthorizeSecurityGroupIngress", "ec2:CreateSecurityGroup", "ec2:CreateTags",
                           "ec2:DisassociateIamInstanceProfile", "iam:AttachUserPolicy"}
    assert statements["IrbotQuarantinedInstances"]["Resource"] == "arn:aws-cn:ec2:*:*:instance/*"
    assert statements["IrbotQuarantinedInstances"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:status": "quarantine"}}
    assert statements["IrbotOwnGroupRules"]["Condition"] == {"StringEquals": {"aws:ResourceTag/irbot:purpose": ["untrack", "isolation"]}}
    assert statements["IrbotNewOwnGroups"]["Condition"] == {"StringEquals": {"aws:RequestTag/irbot:purpose": ["untrack", "isolation"]}}
    assert "irbot:purpose" not in statements["IrbotOwnTags"]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]  # only as a group is made
    assert statements["IrbotTagsAtCreation"]["Condition"] == {"StringEquals": {"ec2:CreateAction": ["CreateSecurityGroup", "CreateSnapshots",
                                                                                                    "CopySnapshot"]}}
    # one action's policy: stop changes no tag, so it gets no tag statement; isolate gets every one it needs
    assert "IrbotOwnTags" not in by_sid(policy_document("ir-evidence", action="stop"))
    assert {"IrbotQuarantinedInstances", "IrbotWhatAnInstanceHas", "IrbotOwnGroupRules", "IrbotNewOwnGroups", "IrbotOwnTags"} <= set(
        by_sid(policy_document("ir-evidence", action="isolate")))


# parliament wants each statement to name the resource type an action requires. AWS authorizes each resource
# of a request on its own, so an instance (scoped by irbot's tag) and the groups, interfaces and volumes it has
# (anybody's, on release), a group (by tag) and its rules, a new group and its VPC are granted in separate
# statements; the statements without the required type are the "mismatch". README: security notes.
SEPARATE_RESOURCES = {"ec2:ModifyInstanceAttribute", "ec2:ModifyNetworkInterfaceAttribute", "ec2:CreateSecurityGroup",
                      "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress",
                      "ec2:RevokeSecurityGroupIngress"}


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
