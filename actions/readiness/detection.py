"""Detection: GuardDuty in every region (and, in an organization, a delegated administrator), Security Hub, AWS Config."""

from __future__ import annotations

from actions.aws import call, paginate
from actions.errors import ActionError
from actions.readiness.checks import Probe, Scope, Verdict, check, failed, passed
from actions.words import count


@check("guardduty", "GuardDuty on", area="Detection", scope=Scope.REGION,
       permissions=("guardduty:ListDetectors", "guardduty:GetDetector"),
       fix="Enable GuardDuty in every region listed (from the delegated administrator, for the whole organization at once).")
def guardduty(probe: Probe) -> Verdict:
    client = probe.client("guardduty")
    detectors = paginate(client, "list_detectors", "DetectorIds")
    if not detectors:
        return failed("GuardDuty is off: no detector")
    if any(call(client, "get_detector", DetectorId=d).get("Status") == "ENABLED" for d in detectors):
        return passed("a detector is enabled")
    return failed(f"{count(len(detectors), 'detector')}, none enabled", detectors)


@check("guardduty-admin", "GuardDuty has a delegated administrator", area="Detection", scope=Scope.ACCOUNT,
       permissions=("organizations:DescribeOrganization", "guardduty:ListOrganizationAdminAccounts"),
       fix="From the organization's management account, delegate GuardDuty's administration to the security account "
           "(`aws guardduty enable-organization-admin-account`).")
def guardduty_admin(probe: Probe) -> Verdict | None:
    try:
        organization = call(probe.client("organizations"), "describe_organization")["Organization"]
    except ActionError as exc:
        if exc.code == "AWSOrganizationsNotInUseException":
            return None  # not in an organization: nothing to delegate
        raise
    if organization.get("MasterAccountId") != probe.account:
        return None  # only the management account can say; it is checked where it is selected
    admins = [a["AdminAccountId"] for a in paginate(probe.client("guardduty"), "list_organization_admin_accounts", "AdminAccounts")
              if a.get("AdminStatus") == "ENABLED"]
    return passed(f"delegated to {', '.join(admins)}") if admins else failed("no delegated administrator")


@check("securityhub", "Security Hub on", area="Detection", scope=Scope.REGION, permissions=("securityhub:DescribeHub",),
       fix="Enable Security Hub in every region listed (from the delegated administrator, for the whole organization at once).")
def security_hub(probe: Probe) -> Verdict:
    try:
        call(probe.client("securityhub"), "describe_hub")
    except ActionError as exc:
        if exc.code == "InvalidAccessException":  # Security Hub's answer for an account not subscribed
            return failed("Security Hub is not enabled")
        raise
    return passed("enabled")


@check("config", "AWS Config recording", area="Detection", scope=Scope.REGION, permissions=("config:DescribeConfigurationRecorderStatus",),
       fix="Set up AWS Config in every region listed and start its recorder, so what changed and when can be answered.")
def config_recording(probe: Probe) -> Verdict:
    recorders = call(probe.client("config"), "describe_configuration_recorder_status").get("ConfigurationRecordersStatus", [])
    if any(r.get("recording") for r in recorders):
        return passed("recording")
    if recorders:
        return failed("the recorder is stopped", [r["name"] for r in recorders])
    return failed("no configuration recorder")
