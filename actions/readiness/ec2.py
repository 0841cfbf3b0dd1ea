"""EC2: EBS encryption by default, IMDSv2 required, and instances irbot could capture memory from."""

from __future__ import annotations

from actions.aws import call, paginate
from actions.collect import decode_console_output
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.readiness.network import named
from actions.ssh import trusted_from_console, trusted_from_known_hosts
from actions.words import count

INSTANCES = ("ec2:DescribeInstances",)


def instances(probe: Probe, *states: str) -> list[dict]:
    found = paginate(probe.client("ec2"), "describe_instances", "Reservations",
                     Filters=[{"Name": "instance-state-name", "Values": list(states)}])
    return [i for r in found for i in r["Instances"]]


@check("ebs-encryption", "EBS encryption by default", area="EC2", scope=Scope.REGION, permissions=("ec2:GetEbsEncryptionByDefault",),
       fix="Turn on EBS encryption by default in every region listed (EC2 console → Account attributes → Data protection and security).")
def ebs_encryption(probe: Probe) -> Verdict:
    on = call(probe.client("ec2"), "get_ebs_encryption_by_default").get("EbsEncryptionByDefault")
    return passed("on") if on else failed("off: new volumes and snapshots can be unencrypted")


@check("imdsv2", "Instances require IMDSv2", area="EC2", scope=Scope.REGION, permissions=INSTANCES,
       fix="Require IMDSv2 on each instance listed (`aws ec2 modify-instance-metadata-options --http-tokens required`) "
           "and make it the account's default, so a server-side request forgery can't read the role's credentials.")
def imdsv2(probe: Probe) -> Verdict:
    found = instances(probe, "pending", "running", "stopping", "stopped")
    open_ = [named(i, "InstanceId") for i in found if (i.get("MetadataOptions") or {}).get("HttpTokens") != "required"]
    if open_:
        return failed(f"{count(len(open_), 'instance')} of {len(found)} allow IMDSv1", open_)
    return passed(f"all {count(len(found), 'instance')} require IMDSv2")


@check("memory-capture", "irbot can verify every instance's SSH host key", area="EC2", scope=Scope.REGION,
       permissions=(*INSTANCES, "ec2:GetConsoleOutput"),
       fix="Let instances print their SSH host key fingerprints to the console at boot (cloud-init's default), or list them in "
           "IR_SSH_KNOWN_HOSTS: irbot captures memory only from a host whose key it can verify.")
def memory_capture(probe: Probe) -> Verdict:
    ec2 = probe.client("ec2")
    found = instances(probe, "running")
    unknown_keys = []
    for instance in found:
        host = instance.get("PrivateIpAddress")
        if host and trusted_from_known_hosts(probe.context.known_hosts, host, 22).fingerprints:
            continue
        console = decode_console_output(call(ec2, "get_console_output", InstanceId=instance["InstanceId"]).get("Output"))
        if not trusted_from_console(console).fingerprints:
            unknown_keys.append(named(instance, "InstanceId"))
    if unknown_keys:
        return failed(f"{count(len(unknown_keys), 'running instance')} of {len(found)} with no host key irbot can verify", unknown_keys)
    return passed(f"all {count(len(found), 'running instance')} have a host key irbot can verify")
