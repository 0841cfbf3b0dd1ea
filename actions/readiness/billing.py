"""Billing: an alarm on EstimatedCharges. A miner on stolen credentials shows up on the bill first."""

from __future__ import annotations

from actions.accounts import partition
from actions.aws import paginate
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed

BILLING_REGION = "us-east-1"  # AWS publishes the billing metrics there alone


@check("billing-alarm", "A CloudWatch alarm on estimated charges", area="Billing", scope=Scope.ACCOUNT,
       permissions=("cloudwatch:DescribeAlarms",),
       fix="Turn on billing alerts (Billing preferences) and create a CloudWatch alarm in us-east-1 on AWS/Billing EstimatedCharges, "
           "notifying people who would notice a sudden rise.")
def billing_alarm(probe: Probe) -> Verdict | None:
    if partition(probe.region) != "aws":
        return None  # billing metrics exist in the commercial partition only
    alarms = paginate(probe.client("cloudwatch", BILLING_REGION), "describe_alarms", "MetricAlarms", AlarmTypes=["MetricAlarm"])
    watching = [a["AlarmName"] for a in alarms if a.get("MetricName") == "EstimatedCharges" and a.get("Namespace") == "AWS/Billing"]
    return passed(f"alarm {watching[0]}") if watching else failed("no alarm on AWS/Billing EstimatedCharges in us-east-1")
