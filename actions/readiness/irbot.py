"""irbot itself: evidence nobody can alter, findings that reach irbot, and a way into every account it answers for."""

from __future__ import annotations

import json

from actions.accounts import partition
from actions.aws import call, client, paginate
from actions.errors import ActionError, reason
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.words import count

FINDING_SOURCES = ("aws.guardduty", "aws.securityhub")


@check("evidence-lock", "The evidence bucket locks objects in COMPLIANCE mode", area="irbot", scope=Scope.DEPLOYMENT,
       permissions=(),  # read by the evidence store, under its own declaration
       fix="Keep evidence in a bucket made with Object Lock and a COMPLIANCE default retention (deploy/cloudformation/hub.yaml makes one); "
           "point IR_EVIDENCE_BUCKET at it.")
def evidence_lock(probe: Probe) -> Verdict:
    context = probe.context
    if not context.evidence_bucket or context.evidence_lock is None:
        return failed("no evidence bucket (IR_EVIDENCE_BUCKET is not set)")
    lock = context.evidence_lock()
    mode = ((lock.get("Rule") or {}).get("DefaultRetention") or {}).get("Mode")
    if lock.get("ObjectLockEnabled") != "Enabled":
        return failed(f"{context.evidence_bucket} has no Object Lock: evidence in it can be changed or deleted")
    if mode != "COMPLIANCE":
        return failed(f"{context.evidence_bucket} has Object Lock, but its default retention is {mode or 'not set'}")
    return passed(f"{context.evidence_bucket}: Object Lock, COMPLIANCE by default")


@check("findings-rule", "A rule sends GuardDuty and Security Hub findings to irbot's queue", area="irbot", scope=Scope.DEPLOYMENT,
       permissions=("events:ListRules", "events:ListTargetsByRule"),
       fix="Create an EventBridge rule for GuardDuty and Security Hub findings targeting IR_FINDINGS_QUEUE_URL's queue "
           "(hub.yaml makes both), and run `irbot findings`.")
def findings_rule(probe: Probe) -> Verdict:
    queue = probe.context.findings_queue
    if not queue:
        return failed("no findings queue (IR_FINDINGS_QUEUE_URL is not set): findings never reach irbot")
    arn = queue_arn(queue, probe.region)
    events = probe.client("events")
    for rule in paginate(events, "list_rules", "Rules"):
        pattern = json.loads(rule.get("EventPattern") or "{}")
        sources = pattern.get("source") or []
        if rule.get("State") != "ENABLED" or not any(s in sources for s in FINDING_SOURCES):
            continue
        if any(t.get("Arn") == arn for t in paginate(events, "list_targets_by_rule", "Targets", Rule=rule["Name"])):
            return passed(f"rule {rule['Name']} sends {', '.join(s for s in sources if s in FINDING_SOURCES)} findings to the queue")
    return failed("no enabled rule sends GuardDuty or Security Hub findings to irbot's queue")


def queue_arn(url: str, home_region: str) -> str:
    """An SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME) as its ARN: no SQS call, so the worker's policy
    needs no SQS permission. A URL without the region in its host (a local endpoint) is in irbot's own region."""
    host, account, name = url.split("://", 1)[-1].split("/")[:3]
    region = host.split(".")[1] if host.startswith("sqs.") else home_region
    return f"arn:{partition(region)}:sqs:{region}:{account}:{name}"


@check("responder-role", "irbot can get into every account of IR_ACCOUNTS", area="irbot", scope=Scope.DEPLOYMENT, permissions=(),
       fix="Deploy the member role in each account listed (deploy/cloudformation/member.yaml, trusting irbot's role; "
           "`irbot iam-policy --member` prints it).")
def responder_role(probe: Probe) -> Verdict:
    context = probe.context
    others = [a for a in (context.allowed_accounts() if context.allowed_accounts else ()) if a != context.own_account]
    if not others:
        return passed("IR_ACCOUNTS names no other account")
    shut = []
    for account in others:
        try:
            # sts:GetCallerIdentity needs no permission: it proves the role was assumed, nothing more.
            call(client(context.session_in(account), "sts", probe.region), "get_caller_identity")
        except ActionError as exc:
            shut.append(f"{account}: {reason(exc)}")
    if shut:
        return failed(f"{count(len(shut), 'account')} of {len(others)} can't be entered", shut)
    return passed(f"all {count(len(others), 'other account')} entered")
