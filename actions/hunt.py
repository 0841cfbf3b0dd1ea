"""hunt-key: what a leaked access key did and made, in every enabled region at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone

import boto3

from actions import places
from actions.artefacts import Result, json_artefact
from actions.aws import call, client, paginate
from actions.cloudtrail import EventSource
from actions.context import RunContext
from actions.errors import ActionError, reason
from actions.registry import Need, Option, Risk, action
from actions.steps import Outcome, StepLog
from actions.words import count

DEFAULT_DAYS = 30
IAM = "iam"  # the task that searches an account's IAM, beside its regions
PERMISSIONS = (
    *places.PERMISSIONS, "ec2:DescribeInstances", "ec2:DescribeKeyPairs", "ec2:DescribeSecurityGroups",
    "cloudtrail:LookupEvents", "iam:ListUsers", "iam:ListAccessKeys", "lambda:ListFunctions",
)
CREATING_EVENTS = {"RunInstances", "CreateSecurityGroup", "CreateKeyPair", "ImportKeyPair", "CreateUser", "CreateAccessKey",
                   "CreateFunction20150331", "CreateFunction", "CreateLoginProfile", "AttachUserPolicy", "PutUserPolicy"}


@action("hunt-key", risk=Risk.READ, scope="regions", summary="Find what an access key did and made, in every region.", permissions=PERMISSIONS,
        target="access-key", extra_options=(Option("--since", "YYYY-MM-DD", "date", says="for everything since {value}"),
                       Option("--accounts", "all|ACCOUNT,...", "accounts", says="in accounts {value}")), needs=(Need.EVENTS,))
def hunt_key(session: boto3.Session, key_id: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
             since: str | None = None, accounts: str | None = None) -> Result:
    events: EventSource | None = context.events
    start = datetime.combine(date.fromisoformat(since), time(), timezone.utc) if since else \
        datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DEFAULT_DAYS)
    result = Result("hunt-key", key_id, region)
    result.facts["since"] = start.date().isoformat()
    # Without --accounts, the account the key belongs to (the bot chose it); with it, each one named, or all irbot may act in.
    names = places.chosen_accounts(context, accounts)
    many = len(names) > 1
    regions = places.enabled_regions(session, region)
    result.facts["regions"] = regions
    findings: list[dict] = []
    events_seen: dict[str, list[dict]] = {}
    sessions: dict[str, boto3.Session] = {}

    def enter(account: str):
        return places.enter(session, context, account)

    def search(task: tuple[str, str]):
        account, name = task
        if name == IAM:
            try:
                return account, name, _iam_findings(client(sessions[account], "iam", region), start), [], []
            except ActionError as exc:
                return account, name, [], [], [str(exc)]
        return (account, *_search_region(sessions[account], name, key_id, start, events))

    quiet: dict[str, list[str]] = {}
    iam_found: dict[str, list[dict]] = {}
    # One bound on concurrent calls, whatever the number of accounts: each task makes its calls one after another.
    with ThreadPoolExecutor(max_workers=max(1, min(context.concurrency, len(names) * (len(regions) + 1)))) as pool:
        for account, account_session, failure in pool.map(enter, names):  # one AssumeRole per account, all at once
            if failure is None:
                sessions[account] = account_session
            else:
                steps.add(f"account:{account}", f"Search account {account}", Outcome.FAILED, f"couldn't get in: {failure}")
        tasks = [(a, r) for a in sessions for r in (*regions, IAM)]
        for account, name, found, seen, gaps in pool.map(search, tasks):
            where = f"{account} {name}" if many else name
            if name == IAM:
                iam_found[account] = found
                title = "Search IAM (global)" + (f" of {account}" if many else "")
                step = f"account:{account}:iam" if many else "iam"
                if gaps:
                    steps.add(step, title, Outcome.FAILED, gaps[0])
                else:
                    steps.add(step, title, Outcome.DONE, f"{count(len(found), 'user or key', 'users or keys')} made since {start.date()}")
                continue
            for item in found:
                item["account"] = account
            findings.extend(found)
            events_seen.setdefault(account, []).extend(seen)
            if not found and not seen and not gaps:
                quiet.setdefault(account, []).append(name)
                continue
            step = f"account:{account}:region:{name}" if many else f"region:{name}"
            if found or seen:
                steps.add(step, f"Search {where}", Outcome.DONE,
                          f"{count(len(seen), 'event')} by the key, {count(len(found), 'resource')} made since {start.date()}")
            if gaps:
                # One line a region: what couldn't be searched there, and why.
                steps.add(f"{step}:gaps", f"Search {where}", Outcome.FAILED, "couldn't search " + "; ".join(gaps))
    for account, names_quiet in quiet.items():
        steps.add(f"account:{account}:regions:quiet" if many else "regions:quiet",
                  f"Search {count(len(names_quiet), 'other region')}" + (f" of {account}" if many else ""), Outcome.DONE,
                  f"nothing by the key or made since {start.date()} in {', '.join(names_quiet)}")
    for account, found in iam_found.items():
        # IAM ran beside the regions: what the key made there is known once all the account's events are in.
        by_key = {name for e in events_seen.get(account, []) for _, name in e["resources"] if name}
        for item in found:
            item["account"], item["by_key"] = account, item["id"] in by_key
        findings.extend(found)

    # What the key itself is known to have made comes first, then the rest, newest first.
    findings.sort(key=lambda f: (not f["by_key"], f["kind"] != "instance", str(f.get("created") or "")), reverse=False)
    result.facts["findings"] = findings
    result.findings = findings
    result.facts["regions"] = regions
    result.facts["accounts"] = list(names)
    result.artefacts.append(json_artefact("hunt-key.json", f"What {key_id} did and made since {start.date()}",
                                          {"key": key_id, "since": start.date().isoformat(), "accounts": list(names), "regions": regions,
                                           "findings": findings, "events": [e for seen in events_seen.values() for e in seen]}))
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


def _iam_findings(iam, start: datetime) -> list[dict]:
    """Users and keys made since ``start`` (whether the key made them is decided once its events are in)."""
    found = []
    for user in paginate(iam, "list_users", "Users"):
        if user["CreateDate"] >= start:
            found.append(_finding("iam-user", user["UserName"], "global", user["CreateDate"], False, "IAM user"))
        for key in paginate(iam, "list_access_keys", "AccessKeyMetadata", UserName=user["UserName"]):
            if key["CreateDate"] >= start:
                found.append(_finding("access-key", key["AccessKeyId"], "global", key["CreateDate"], False,
                                      f"key of {user['UserName']}, {key['Status']}"))
    return found




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
