"""hunt-key: what a leaked access key did and made, in every enabled region at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import boto3

from actions.artefacts import Result, json_artefact
from actions.aws import call, client, paginate
from actions.cloudtrail import EventSource
from actions.context import RunContext
from actions.errors import ActionError, reason
from actions.registry import Need, Option, Risk, action
from actions.steps import Outcome, StepLog

DEFAULT_DAYS = 30
PERMISSIONS = (
    "ec2:DescribeRegions", "ec2:DescribeInstances", "ec2:DescribeKeyPairs", "ec2:DescribeSecurityGroups",
    "cloudtrail:LookupEvents", "iam:ListUsers", "iam:ListAccessKeys", "lambda:ListFunctions",
)
CREATING_EVENTS = {"RunInstances", "CreateSecurityGroup", "CreateKeyPair", "ImportKeyPair", "CreateUser", "CreateAccessKey",
                   "CreateFunction20150331", "CreateFunction", "CreateLoginProfile", "AttachUserPolicy", "PutUserPolicy"}


@action("hunt-key", risk=Risk.READ, summary="Find what an access key did and made, in every region.", permissions=PERMISSIONS,
        target="access-key", extra_options=(Option("--since", "YYYY-MM-DD", "date", says="for everything since {value}"),), needs=(Need.EVENTS,))
def hunt_key(session: boto3.Session, key_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
             since: str | None = None, max_parallel: int = 8) -> Result:
    events: EventSource | None = context.events
    start = datetime.combine(date.fromisoformat(since), time(), timezone.utc) if since else \
        datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DEFAULT_DAYS)
    result = Result("hunt-key", key_id, region)
    result.facts["since"] = start.date().isoformat()
    ec2 = client(session, "ec2", region)
    regions = sorted(r["RegionName"] for r in call(ec2, "describe_regions")["Regions"]
                     if r.get("OptInStatus", "opt-in-not-required") in ("opt-in-not-required", "opted-in"))
    findings: list[dict] = []
    events_seen: list[dict] = []

    quiet = []
    with ThreadPoolExecutor(max_workers=max_parallel) as pool:
        for name, found, seen, gaps in pool.map(lambda r: _search_region(session, r, key_id, start, events), regions):
            findings.extend(found)
            events_seen.extend(seen)
            if not found and not seen and not gaps:
                quiet.append(name)
                continue
            if found or seen:
                steps.add(f"region:{name}", f"Search {name}", Outcome.DONE,
                          f"{_count(len(seen), 'event')} by the key, {_count(len(found), 'resource')} made since {start.date()}")
            if gaps:
                # One line a region: what couldn't be searched there, and why.
                steps.add(f"region:{name}:gaps", f"Search {name}", Outcome.FAILED, "couldn't search " + "; ".join(gaps))
    if quiet:
        steps.add("regions:quiet", f"Search {_count(len(quiet), 'other region')}", Outcome.DONE,
                  f"nothing by the key or made since {start.date()} in {', '.join(quiet)}")
    try:
        found = _iam_findings(client(session, "iam", region), start, events_seen)
        findings.extend(found)
        steps.add("iam", "Search IAM (global)", Outcome.DONE, f"{_count(len(found), 'user or key', 'users or keys')} made since {start.date()}")
    except ActionError as exc:
        steps.add("iam", "Search IAM (global)", Outcome.FAILED, str(exc))

    # What the key itself is known to have made comes first, then the rest, newest first.
    findings.sort(key=lambda f: (not f["by_key"], f["kind"] != "instance", str(f.get("created") or "")), reverse=False)
    result.facts["findings"] = findings
    result.findings = findings
    result.facts["regions"] = regions
    result.artefacts.append(json_artefact("hunt-key.json", f"What {key_id} did and made since {start.date()}",
                                          {"key": key_id, "since": start.date().isoformat(), "regions": regions,
                                           "findings": findings, "events": events_seen}))
    result.steps = steps.steps
    return result


def _search_region(session, region: str, key_id: str, start: datetime, events: EventSource | None):
    """What one region shows. Each lookup is independent: one that fails costs only its own part,
    and the region's result says which parts couldn't be searched, and why."""
    gaps: list[str] = []
    found: list[dict] = []

    def part(what: str, read):
        try:
            return read()
        except ActionError as exc:
            gaps.append(f"{what} ({reason(exc)})")
            return None

    seen = part("CloudTrail events", lambda: events.lookup(session, region, key_id, start) if events else []) or []
    by_key = {name for e in seen for _, name in e["resources"] if name}
    ec2 = client(session, "ec2", region)
    for reservation in part("instances", lambda: paginate(ec2, "describe_instances", "Reservations")) or []:
        for inst in reservation["Instances"]:
            launched = inst.get("LaunchTime")
            if launched and launched >= start and inst["State"]["Name"] != "terminated":
                found.append(_finding("instance", inst["InstanceId"], region, launched, inst["InstanceId"] in by_key,
                                      f"{inst.get('InstanceType')} {inst['State']['Name']}, launched {launched:%Y-%m-%d %H:%M} UTC"))
    for pair in (part("key pairs", lambda: call(ec2, "describe_key_pairs")) or {}).get("KeyPairs", []):
        created = pair.get("CreateTime")
        if created and created >= start:
            found.append(_finding("key-pair", pair["KeyName"], region, created, pair["KeyName"] in by_key, "EC2 key pair"))
    # Security groups carry no creation time: only CloudTrail can say the key made one.
    for event in seen:
        if event["name"] == "CreateSecurityGroup":
            group = (event["event"].get("responseElements") or {}).get("groupId") or next((n for t, n in event["resources"] if n and n.startswith("sg-")), None)
            if group:
                found.append(_finding("security-group", group, region, event["time"], True, "created by the key"))
    lam = client(session, "lambda", region)
    for function in part("Lambda functions", lambda: paginate(lam, "list_functions", "Functions")) or []:
        modified = _parse(function.get("LastModified"))
        if modified and modified >= start:
            found.append(_finding("lambda-function", function["FunctionName"], region, modified, function["FunctionName"] in by_key, "Lambda function changed"))
    return region, found, seen, gaps


def _iam_findings(iam, start: datetime, seen: list[dict]) -> list[dict]:
    by_key = {name for e in seen for _, name in e["resources"] if name}
    found = []
    for user in paginate(iam, "list_users", "Users"):
        if user["CreateDate"] >= start:
            found.append(_finding("iam-user", user["UserName"], "global", user["CreateDate"], user["UserName"] in by_key, "IAM user"))
        for key in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=user["UserName"]):
            if key["CreateDate"] >= start:
                found.append(_finding("access-key", key["AccessKeyId"], "global", key["CreateDate"], key["AccessKeyId"] in by_key,
                                      f"key of {user['UserName']}, {key['Status']}"))
    return found


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _finding(kind: str, resource: str, region: str, created, by_key: bool, detail: str) -> dict:
    return {"kind": kind, "id": resource, "region": region, "created": created.isoformat() if hasattr(created, "isoformat") else created,
            "by_key": by_key, "detail": detail}


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
