"""prep: how ready the accounts are for an incident, before one happens.

Every readiness check (actions.readiness) runs in every selected account and region at once, within the request's
bound on concurrent AWS calls. The result is a score and one entry per check, failures worst first, kept whole as
evidence (prep.json) so readiness can be compared over time. Nothing changes in AWS, so it runs without approval.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import boto3

from actions import places, readiness
from actions.artefacts import Result, json_artefact
from actions.aws import UndeclaredCall
from actions.context import RunContext
from actions.errors import ActionError
from actions.readiness import Check, Probe, Scope, Status, Verdict
from actions.readiness.checks import WORST_SHOWN, unknown
from actions.registry import Reply, Risk, action
from actions.steps import StepLog

ORDER = {Status.FAILED: 0, Status.UNKNOWN: 1, Status.PASSED: 2}


@action("prep", risk=Risk.READ, summary="Check readiness for an incident: logging, detection, credentials, exposure and irbot itself, scored.",
        permissions=(*places.PERMISSIONS, *readiness.permissions()), target=None, reply=Reply.READINESS, everywhere=True,
        policy="readiness")
def prep(session: boto3.Session, target: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
         accounts: str | None = None, regions: str | None = None) -> Result:
    names = places.chosen_accounts(context, accounts)
    where = places.enabled_regions(session, region) if regions == "all" else [region]
    now = datetime.now(timezone.utc)
    result = Result("prep", "", region)
    with ThreadPoolExecutor(max_workers=max(1, min(context.concurrency, len(readiness.CHECKS) * len(names) * len(where)))) as pool:
        entered = list(pool.map(lambda account: places.enter(session, context, account), names))
        sessions = {account: inside for account, inside, refused in entered if refused is None}
        shut = {account: refused for account, _, refused in entered if refused is not None}
        own = context.own_account or context.account
        if own not in sessions:
            sessions[own] = session if own == context.account else context.session_in(own)

        def judge(task: tuple[Check, str, str]) -> Verdict | None:
            check, account, place = task  # place: the region a regional check looks at, else "" (account-wide, or irbot's own)
            looks_in = place or (context.home_region or region if check.scope is Scope.DEPLOYMENT else region)
            probe = Probe(sessions[account], account, looks_in, context, now)
            try:
                verdict = check.run(probe)
            except ActionError as exc:
                verdict = unknown(str(exc))
            except UndeclaredCall:
                raise  # a check calling what it doesn't declare is irbot's bug (raised only under the tests' check)
            except Exception as exc:  # noqa: BLE001 - one check's bug costs its verdict, said as such, never the card
                verdict = unknown(f"irbot hit an internal error in this check ({type(exc).__name__})")
            if verdict is not None:
                verdict.check, verdict.account, verdict.region = check.name, account, place
            return verdict

        tasks = []
        for check in readiness.CHECKS.values():
            if check.scope is Scope.REGION:
                tasks += [(check, account, r) for account in names if account in sessions for r in where]
            elif check.scope is Scope.ACCOUNT:
                tasks += [(check, account, "") for account in names if account in sessions]
            else:
                tasks.append((check, own, ""))
        verdicts = [v for v in pool.map(judge, tasks) if v is not None]
    # An account irbot couldn't get into: every check there couldn't be run, and says why.
    for account, refused in shut.items():
        for check in readiness.CHECKS.values():
            if check.scope is not Scope.DEPLOYMENT:
                verdicts.append(Verdict(Status.UNKNOWN, f"couldn't get into {account}: {refused}", check=check.name, account=account))
    report = score(verdicts, many_accounts=len(names) > 1)
    report.update(accounts=list(names), regions=where, at=now.isoformat(timespec="seconds"),
                  account=names[0] if len(names) == 1 else "all")
    result.facts["readiness"] = report
    result.facts["regions"] = where if regions == "all" else []
    result.artefacts.append(json_artefact("prep.json", f"Readiness of {', '.join(names)} in {len(where)} region(s): every check's verdict",
                                          report | {"verdicts": [v.to_dict() for v in verdicts]}))
    return result


def score(verdicts: list[Verdict], *, many_accounts: bool) -> dict:
    """One entry per check that applied anywhere, failures first (the most places, then the most offenders), and the
    score: the share of checks that passed everywhere they ran. A check that couldn't be run counts as not passed."""
    by_check: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        by_check.setdefault(verdict.check, []).append(verdict)
    entries = [_entry(readiness.CHECKS[name], found, many_accounts) for name, found in by_check.items()]
    entries.sort(key=lambda e: (ORDER[Status(e["status"])], -len(e["places"]), -(len(e["offenders"]) + e["more"]), e["name"]))
    passed = sum(1 for e in entries if e["status"] == Status.PASSED.value)
    return {"score": round(100 * passed / len(entries)) if entries else None, "passed": passed, "total": len(entries),
            "failed": [e["name"] for e in entries if e["status"] == Status.FAILED.value],
            "unknown": [e["name"] for e in entries if e["status"] == Status.UNKNOWN.value], "checks": entries}


def _entry(check: Check, verdicts: list[Verdict], many_accounts: bool) -> dict:
    """A check across every place it ran: its worst status, where that was, what was found and the worst offenders."""
    status = min((v.status for v in verdicts), key=ORDER.get)
    worst = sorted((v for v in verdicts if v.status is status), key=lambda v: -(len(v.offenders) + v.more))
    shown = [_where(v, many_accounts) for v in worst]
    offenders = [f"{place}: {o}" if len(worst) > 1 and place else o for v, place in zip(worst, shown) for o in v.offenders]
    founds = list(dict.fromkeys(v.found for v in worst))
    return {"name": check.name, "title": check.title, "area": check.area, "fix": check.fix, "status": status.value,
            "places": [p for p in shown if p], "found": founds[0] + (f" (and {len(founds) - 1} other findings)" if len(founds) > 1 else ""),
            "offenders": offenders[:WORST_SHOWN], "more": len(offenders[WORST_SHOWN:]) + sum(v.more for v in worst)}


def _where(verdict: Verdict, many_accounts: bool) -> str:
    """``eu-west-1``, ``111111111111 eu-west-1`` with several accounts, or the account alone for an account-wide check."""
    parts = [verdict.account if many_accounts else "", verdict.region]
    return " ".join(p for p in parts if p)
