"""Network: flow logs on every VPC, so who talked to what can be answered after the fact."""

from __future__ import annotations

from actions.aws import paginate
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.words import count


def named(resource: dict, key: str) -> str:
    """``vpc-0abc (prod)``: the ID, and its Name tag when it has one (raw: the tag is anybody's to write)."""
    name = next((t["Value"] for t in resource.get("Tags") or [] if t.get("Key") == "Name"), "")
    return f"{resource[key]} ({name})" if name else resource[key]


@check("flow-logs", "Flow logs on every VPC", area="Network", scope=Scope.REGION,
       permissions=("ec2:DescribeVpcs", "ec2:DescribeFlowLogs"),
       fix="Create a flow log (to CloudWatch Logs or S3, all traffic) for each VPC listed.")
def flow_logs(probe: Probe) -> Verdict:
    ec2 = probe.client("ec2")
    vpcs = paginate(ec2, "describe_vpcs", "Vpcs")
    logged = {f.get("ResourceId") for f in paginate(ec2, "describe_flow_logs", "FlowLogs")}
    missing = [named(v, "VpcId") for v in vpcs if v["VpcId"] not in logged]
    if missing:
        return failed(f"{count(len(missing), 'VPC')} of {len(vpcs)} without flow logs", missing)
    return passed(f"all {count(len(vpcs), 'VPC')} logged")
