"""Findings in the shapes AWS really sends them, after AWS's documented samples: an EventBridge
envelope around a GuardDuty finding, and around Security Hub findings (ASFF)."""

from __future__ import annotations

import copy
import json

GUARDDUTY_EVENT = {
    "version": "0",
    "id": "c8c4daa7-a20c-2f03-0070-b7393dd542ad",
    "detail-type": "GuardDuty Finding",
    "source": "aws.guardduty",
    "account": "123456789012",
    "time": "2026-11-23T09:00:00Z",
    "region": "us-east-1",
    "resources": [],
    "detail": {
        "schemaVersion": "2.0",
        "accountId": "123456789012",
        "region": "us-east-1",
        "partition": "aws",
        "id": "16afba5c5c43e07c9e3e5e2e544e95df",
        "arn": "arn:aws:guardduty:us-east-1:123456789012:detector/123456789012/finding/16afba5c5c43e07c9e3e5e2e544e95df",
        "type": "CryptoCurrency:EC2/BitcoinTool.B!DNS",
        "resource": {
            "resourceType": "Instance",
            "instanceDetails": {
                "instanceId": "i-99999999",
                "instanceType": "m3.xlarge",
                "launchTime": "2026-11-01T11:04:55Z",
                "platform": None,
                "networkInterfaces": [{"privateIpAddress": "10.0.0.1", "publicIp": "198.51.100.0", "subnetId": "subnet-99999999", "vpcId": "vpc-99999999"}],
                "tags": [{"key": "Name", "value": "web-1"}],
                "instanceState": "running",
                "availabilityZone": "us-east-1a",
                "imageId": "ami-99999999",
            },
        },
        "service": {
            "serviceName": "guardduty",
            "detectorId": "3caf4e0aaa46ce4ccbcef949a8785353",
            "action": {"actionType": "DNS_REQUEST", "dnsRequestAction": {"domain": "pool.example", "protocol": "UDP", "blocked": False}},
            "resourceRole": "TARGET",
            "additionalInfo": {"sample": True},
            "eventFirstSeen": "2026-11-23T08:51:23Z",
            "eventLastSeen": "2026-11-23T08:58:23Z",
            "archived": False,
            "count": 1,
        },
        "severity": 8,
        "createdAt": "2026-11-23T08:59:00.000Z",
        "updatedAt": "2026-11-23T08:59:00.000Z",
        "title": "EC2 instance i-99999999 is querying a domain name that is associated with Bitcoin activity.",
        "description": "EC2 instance i-99999999 is querying a domain name that is associated with Bitcoin activity.",
    },
}

SECURITY_HUB_EVENT = {
    "version": "0",
    "id": "8e5622f9-d81c-4d81-612a-9319e7ee2506",
    "detail-type": "Security Hub Findings - Imported",
    "source": "aws.securityhub",
    "account": "123456789012",
    "time": "2026-11-23T09:05:00Z",
    "region": "us-east-1",
    "resources": ["arn:aws:securityhub:us-east-1::product/aws/guardduty/arn:aws:guardduty:us-east-1:123456789012:detector/x/finding/y"],
    "detail": {
        "findings": [{
            "SchemaVersion": "2018-10-08",
            "Id": "arn:aws:guardduty:us-east-1:123456789012:detector/x/finding/4ab6b8e3c0d3d3b1f",
            "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/guardduty",
            "GeneratorId": "arn:aws:guardduty:us-east-1:123456789012:detector/x",
            "AwsAccountId": "123456789012",
            "Region": "us-east-1",
            "Types": ["TTPs/Initial Access/UnauthorizedAccess:IAMUser-MaliciousIPCaller.Custom"],
            "FirstObservedAt": "2026-11-23T08:30:00.000Z",
            "LastObservedAt": "2026-11-23T09:00:00.000Z",
            "CreatedAt": "2026-11-23T08:31:00.000Z",
            "UpdatedAt": "2026-11-23T09:01:00.000Z",
            "Severity": {"Label": "HIGH", "Normalized": 70, "Product": 7},
            "Title": "API ListBuckets was invoked from an IP address on a custom threat list.",
            "Description": "An API was used to access a bucket from an IP address on a custom threat list.",
            "Resources": [{
                "Type": "AwsIamAccessKey",
                "Id": "AWS::IAM::AccessKey:AKIAIOSFODNN7EXAMPLE",
                "Partition": "aws",
                "Region": "us-east-1",
                "Details": {"AwsIamAccessKey": {"PrincipalName": "deploy-bot", "PrincipalType": "IAMUser", "Status": "Active"}},
            }],
            "RecordState": "ACTIVE",
            "Workflow": {"Status": "NEW"},
        }],
    },
}


def guardduty(**changes) -> str:
    event = copy.deepcopy(GUARDDUTY_EVENT)
    for path, value in changes.items():
        target = event["detail"]
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return json.dumps(event)


def security_hub() -> str:
    return json.dumps(SECURITY_HUB_EVENT)
