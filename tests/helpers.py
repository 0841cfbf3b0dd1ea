"""Building blocks for the tests: Slack-signed requests, free ports, a realistic AWS world."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from urllib.parse import urlencode

import boto3

import actions
from actions import aws
from standins.disk_images import EBS_BLOCK, write_ebs_snapshot  # noqa: F401 (shared with the demo; the tests import them from here)

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-1234567890-0987654321-TESTTOKENabcdefghijklmn"
RESPONDER = "U0ALICE01"
SECOND_RESPONDER = "U0BOB0002"
THIRD_RESPONDER = "U0CAROL03"  # a responder who is not an approver, unless a test makes her one
OUTSIDER = "U0MALLORY"
CHANNEL = "C0INCIDENT"
TEAM = "T0IRBOT"


def irbot_variables(slack_api_url: str, redis_url: str) -> dict[str, str]:
    """irbot's own settings for a test: the fake Slack, the test's Redis, the moto bucket."""
    return {
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack_api_url,
        "REDIS_URL": redis_url,
        "IR_EVIDENCE_BUCKET": "ir-evidence",
        "IR_RESPONDERS": f"{RESPONDER},{SECOND_RESPONDER}",
        "IR_APPROVERS": SECOND_RESPONDER,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slack_signature(secret: str, timestamp: str, body: str) -> str:
    """Exactly Slack's scheme: v0= HMAC-SHA256 over 'v0:{timestamp}:{body}'."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def slash_command(text: str, *, user: str = RESPONDER, channel: str = CHANNEL, response_url: str = "") -> str:
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": TEAM,
            "team_domain": "irbot-test",
            "channel_id": channel,
            "channel_name": "incident-test",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/ir",
            "text": text,
            "api_app_id": "A0IRBOT",
            "response_url": response_url,
            "trigger_id": "1234.5678.abcd",
        }
    )


def signed_headers(body: str, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": slack_signature(secret, ts, body),
    }


_IMAGES: dict[str, str] = {}


def amazon_image(ec2) -> str:
    """An Amazon AMI of the client's region, looked up once per test session: moto's image list is
    slow to read and the same after every reset."""
    region = ec2.meta.region_name
    if region not in _IMAGES:
        _IMAGES[region] = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    return _IMAGES[region]


def make_quarantine_policy(iam) -> str:
    """The managed policy a deployment makes in every account (deploy/cloudformation) for revoke-key to attach; once per account."""
    from actions.keys import quarantine_policy

    try:
        return iam.create_policy(PolicyName="irbot-quarantine", PolicyDocument=json.dumps(quarantine_policy()))["Policy"]["Arn"]
    except iam.exceptions.EntityAlreadyExistsException:
        return next(p["Arn"] for p in iam.list_policies(Scope="Local")["Policies"] if p["PolicyName"] == "irbot-quarantine")


def make_world(region: str = "us-east-1", *, bucket: str | None = "ir-evidence", object_lock: bool = True,
               session: boto3.Session | None = None) -> dict:
    """A VPC with a running instance (two volumes, an instance profile) and an evidence bucket; in ``session``'s
    account (default: the test's own)."""
    session = session or boto3.Session(region_name=region)
    ec2 = session.client("ec2")
    iam = session.client("iam")
    s3 = session.client("s3")

    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    )
    make_quarantine_policy(iam)
    iam.create_role(RoleName=f"web-role-{region}", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    policy = iam.create_policy(
        PolicyName=f"web-read-s3-{region}",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}',
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName=f"web-role-{region}", PolicyArn=policy)
    profile = iam.create_instance_profile(InstanceProfileName=f"web-profile-{region}")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=f"web-profile-{region}", RoleName=f"web-role-{region}")
    image = amazon_image(ec2)
    instance = ec2.run_instances(
        ImageId=image,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=[group],
        IamInstanceProfile={"Arn": profile["Arn"]},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}},
            {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20}},
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}],
        UserData="#!/bin/sh\ncurl -s http://203.0.113.9/x | sh\n",
    )["Instances"][0]["InstanceId"]

    if bucket:
        where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock, **where)
    return {"session": session, "region": region, "vpc": vpc, "subnet": subnet, "group": group, "instance": instance, "bucket": bucket, "profile": profile["Arn"]}


def evidence_keys(bucket: str = "ir-evidence") -> list[str]:
    """The evidence objects in the bucket, leaving out the sealed audit batches."""
    s3 = boto3.client("s3")
    contents = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [o["Key"] for o in contents if not o["Key"].startswith("audit/")]


def make_containment_world(region: str = "us-east-1") -> dict:
    """The realistic world of the containment tests: an Auto Scaling group behind an ALB target group,
    its instance with two volumes and an instance profile, an IAM user with two keys, an Object Lock bucket."""
    session = boto3.Session(region_name=region)
    ec2, iam, s3 = session.client("ec2"), session.client("iam"), session.client("s3")
    autoscaling, elbv2 = session.client("autoscaling"), session.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24", AvailabilityZone=f"{region}a")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web tier", VpcId=vpc)["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                                     "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
    iam.create_role(RoleName="web-app", AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}')
    profile = iam.create_instance_profile(InstanceProfileName="web-app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="web-app", RoleName="web-app")
    image = amazon_image(ec2)
    ec2.create_launch_template(LaunchTemplateName="web-template", LaunchTemplateData={
        "ImageId": image, "InstanceType": "t3.micro", "SecurityGroupIds": [web],
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}, {"DeviceName": "/dev/xvdb", "Ebs": {"VolumeSize": 20}}]})
    alb = elbv2.create_load_balancer(Name="web-alb", Subnets=[subnet], SecurityGroups=[web], Type="application")["LoadBalancers"][0]
    target_group = elbv2.create_target_group(Name="web-tg", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(LoadBalancerArn=alb["LoadBalancerArn"], Protocol="HTTP", Port=80,
                          DefaultActions=[{"Type": "forward", "TargetGroupArn": target_group}])
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg", LaunchTemplate={"LaunchTemplateName": "web-template", "Version": "$Latest"},
        MinSize=1, MaxSize=3, DesiredCapacity=1, VPCZoneIdentifier=subnet, TargetGroupARNs=[target_group])
    instance = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": profile["Arn"]}, InstanceId=instance)
    make_quarantine_policy(iam)
    iam.create_user(UserName="deploy-bot")
    keys = [iam.create_access_key(UserName="deploy-bot")["AccessKey"] for _ in range(2)]
    s3.create_bucket(Bucket="ir-evidence", ObjectLockEnabledForBucket=True)
    return {"session": session, "vpc": vpc, "subnet": subnet, "web_group": web, "instance": instance, "target_group": target_group,
            "profile": profile["Arn"], "user": "deploy-bot", "keys": keys, "region": region}


def session_of(action: str) -> boto3.Session:
    """A session under the named action's declared permissions, as a worker gives it."""
    return aws.declare(boto3.Session(), actions.get(action).declaration)


def raw_image_sha256(blocks: dict[int, bytes], size_gib: int = 1) -> str:
    """The SHA-256 of the raw volume holding ``blocks``: zeros wherever no block was written."""
    import hashlib

    digest, zeros = hashlib.sha256(), bytes(EBS_BLOCK)
    for index in range((size_gib << 30) // EBS_BLOCK):
        digest.update(blocks.get(index, zeros))
    return digest.hexdigest()
