"""The irbot command: serve, worker, demo, findings, audit, break glass, doctor, iam-policy."""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path
import sys
from urllib.parse import urlsplit, urlunsplit

from core.settings import VARIABLES, ConfigError, Settings, check_quorum, load


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except ConfigError as exc:
        print(configuration_problems(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def configuration_problems(exc: ConfigError) -> str:
    """One line for one problem; for several, all of them, one a line, so one run shows everything to fix."""
    if len(exc.problems) <= 1:
        return f"irbot: {exc}"
    lines = "\n".join(f"  - {problem}" for problem in exc.problems)
    return (f"irbot: {len(exc.problems)} settings need fixing before irbot can start:\n{lines}\n"
            "Set them in the environment or the env file (irbot --help lists every variable).")


def build_parser() -> argparse.ArgumentParser:
    variables = "\n".join(
        f"  {v.name:<28} {v.meaning}" + (f" (default {v.default})" if v.default else "")
        + (f" [needed by: {', '.join(v.needed_by)}]" if v.needed_by else "")
        for v in VARIABLES
    )
    parser = argparse.ArgumentParser(
        prog="irbot",
        description="Slack ChatOps for AWS incident response.",
        epilog=f"configuration (environment variables):\n{variables}\n  plus boto3's usual AWS credential variables and AWS_ENDPOINT_URL",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    serve = commands.add_parser("serve", help="answer Slack: Socket Mode if SLACK_APP_TOKEN is set, else HTTP on $PORT",
        description=("Answer Slack: /ir commands and button presses, checked and queued within Slack's 3 seconds. Over "
                     "Socket Mode when SLACK_APP_TOKEN is set, otherwise over HTTP on $PORT (POST /slack/events, GET "
                     "/healthz, GET /metrics). Needs Redis and at least one `irbot worker`."))
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on in HTTP mode (default 0.0.0.0)")
    serve.set_defaults(run=run_serve)
    worker = commands.add_parser("worker", help="run an RQ worker for all of irbot's queues",
        description=("Run an RQ worker for all of irbot's queues: it does the work /ir commands ask for against AWS, "
                     "stores the evidence, posts the results, and expires requests nobody approved in time. Run one or "
                     "more beside `irbot serve`."))
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(run=run_worker)
    demo = commands.add_parser("demo", help="play a scripted incident on a simulated AWS account and Slack; no setup needed",
        description=("Play a scripted incident on a simulated AWS account and a fake Slack, printing the channel as it "
                     "goes. Needs no AWS account, Slack app or Redis."))
    demo.set_defaults(run=run_demo)
    findings = commands.add_parser("findings", help="post GuardDuty and Security Hub findings from SQS as cards in IR_ALERTS_CHANNEL",
        description=("Read GuardDuty and Security Hub findings from the SQS queue $IR_FINDINGS_QUEUE_URL and post those at"
                     " or above $IR_FINDINGS_MIN_SEVERITY as cards in $IR_ALERTS_CHANNEL. Run exactly one."))
    findings.add_argument("--once", action="store_true", help="handle what is queued now, then exit")
    findings.set_defaults(run=run_findings)
    audit = commands.add_parser("audit", help="check or export the audit trail",
        description=("Check or export irbot's audit trail: hash-chained records in Redis, sealed in batches to the "
                     "evidence bucket."))
    audit_commands = audit.add_subparsers(title="audit commands", metavar="AUDIT_COMMAND")
    verify = audit_commands.add_parser("verify", help="recompute the hash chain from Redis and the sealed batches; exit 1 naming the first broken record",
        description=("Recompute the audit trail's hash chain from Redis and from the sealed batches in "
                     "$IR_EVIDENCE_BUCKET; exit 1 naming the first broken record."))
    verify.set_defaults(run=run_audit_verify)
    export = audit_commands.add_parser("export", help="write an incident's audit records as JSON lines",
                                       description="Write an incident's audit records as JSON lines, oldest first. The incident is "
                                                   "the declared incident's ID (IR-..., on its card and in /ir audit) or, for work in "
                                                   "a channel where none was declared, the channel ID. An unknown one exits 1.")
    export.add_argument("--incident", required=True, metavar="ID",
                        help="IR-YYYYMMDD-NNN, or the channel ID (C...) where no incident was declared")
    export.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    export.set_defaults(run=run_audit_export)
    audit.set_defaults(run=lambda args: audit.print_help() or 2)
    glass = "break glass, when Slack is down: the same grammar, responders, two-person rule and audit trail as /ir"
    run = commands.add_parser("run", help=f"run an /ir command from here ({glass})",
                              description=f"Run an /ir command from here: {glass}. The story goes to --channel once Slack answers.")
    run.add_argument("text", help='the command as typed after /ir, e.g. "isolate i-0123456789abcdef0"')
    run.add_argument("--as", dest="user", required=True, metavar="SLACK_USER_ID", help="your Slack user ID (must be in IR_RESPONDERS)")
    run.add_argument("--reason", required=True, help="why Slack can't be used; recorded with every record this causes")
    run.add_argument("--channel", help="the channel that gets the story once Slack answers (default $IR_ALERTS_CHANNEL)")
    run.add_argument("--wait", type=float, default=600, metavar="SECONDS", help="how long to wait for a read-only command to end (default 600)")
    run.set_defaults(run=lambda args: _break_glass("run", args))
    approve = commands.add_parser("approve", help=f"approve a waiting request from here ({glass})",
                                  description=f"Approve a waiting request from here, as an approver other than its requester: {glass}.")
    approve.add_argument("request_id", help="the ID `irbot run` or the channel printed")
    approve.add_argument("--as", dest="user", required=True, metavar="SLACK_USER_ID", help="your Slack user ID (an approver, not the requester)")
    approve.add_argument("--reason", required=True, help="why Slack can't be used; recorded with the approval")
    approve.add_argument("--wait", type=float, default=3600, metavar="SECONDS", help="how long to wait for the request to end (default 3600)")
    approve.set_defaults(run=lambda args: _break_glass("approve", args))
    listing = commands.add_parser("requests", help="list the open requests (planning, waiting for approval, approved, running)",
        description=("Break glass, when Slack is down: list the open requests (planning, waiting for approval, approved, "
                     "running) with the IDs `irbot approve` takes."))
    listing.set_defaults(run=lambda args: _break_glass("requests", args))
    doctor = commands.add_parser("doctor", help="check this deployment: Slack token and scopes, Redis durability, the evidence bucket's "
                                                "Object Lock, the findings queue, irbot's IAM permissions, the member accounts",
                                 description="Check this deployment, run where irbot runs (same environment and AWS credentials): the Slack "
                                             "token and scopes, Redis durability, the evidence bucket's Object Lock, the findings queue, "
                                             "irbot's IAM permissions and the member accounts. Exit 1 when a check fails.")
    doctor.set_defaults(run=run_doctor)
    policy = commands.add_parser("iam-policy", help="print the least-privilege IAM policy irbot's AWS identity needs (all processes, or one process or action)",
                                 description="Print irbot's IAM policies as JSON: its own role's (all processes, one process, one action), "
                                             "its permissions boundary, or the member-account role's permissions and trust policies.")
    policy.add_argument("--bucket", default=os.environ.get("IR_EVIDENCE_BUCKET") or None,
                        help="the evidence bucket (default $IR_EVIDENCE_BUCKET; required for irbot's own role)")
    policy.add_argument("--partition", choices=("aws", "aws-cn", "aws-us-gov"),
                        help="the ARNs' partition (default: the one of $AWS_REGION, else aws)")
    policy.add_argument("--protect", metavar="ARN,...", default=os.environ.get("IR_BREAK_GLASS_PRINCIPALS", ""),
                        help="break-glass roles or users irbot's policy denies it to change (default $IR_BREAK_GLASS_PRINCIPALS)")
    policy.add_argument("--hub-role-name", default="irbot", metavar="NAME",
                        help="the name of irbot's own role, which its policy denies it to change (default irbot)")
    which = policy.add_mutually_exclusive_group()
    which.add_argument("--process", choices=("serve", "worker", "findings", "audit"), help="only what this process calls")
    which.add_argument("--action", metavar="NAME", help="only what this action calls (an /ir command)")
    which.add_argument("--boundary", action="store_true", help="the permissions boundary for irbot's own role")
    which.add_argument("--part", choices=("core", "disks", "readiness"), help="one of the managed policies irbot's own role holds "
                       "(IAM caps each at 6,144 characters): core (the default), disks (/ir image, /ir workstation), readiness (/ir prep)")
    which.add_argument("--member", action="store_true",
                       help="the role to deploy in every member account ($IR_ACCOUNT_ROLE): its permissions and trust policies")
    which.add_argument("--quarantine", action="store_true",
                       help="the managed policy irbot-quarantine that revoke-key attaches, to create once in every account (the templates do)")
    policy.add_argument("--hub-role", metavar="ARN", help="with --member: irbot's own role ARN, the only principal the member role trusts")
    policy.set_defaults(run=run_iam_policy)
    generate = commands.add_parser("templates", help="write the CloudFormation templates (hub.yaml, member.yaml) generated from the registry",
                                   description="Write deploy/cloudformation's hub.yaml (evidence bucket, findings queue and rules, irbot's "
                                               "role) and member.yaml (the responder role, as a StackSet), from the same policies as iam-policy.")
    generate.add_argument("--out", default="deploy/cloudformation", help="the directory to write to (default deploy/cloudformation)")
    generate.set_defaults(run=run_templates)
    return parser


def redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _redis(settings: Settings, *, blocking: bool):
    from redis.exceptions import RedisError

    from core.queues import connect

    connection = connect(settings.redis_url, blocking=blocking)
    try:
        connection.ping()
    except RedisError as exc:
        raise ConfigError(f"REDIS_URL: cannot reach Redis at {redacted_url(settings.redis_url)} ({type(exc).__name__}); start Redis or fix the URL.") from None
    return connection


def run_serve(args) -> int:
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError

    from bot.app import create_app
    from core import logs, metrics

    settings = load(os.environ, "serve")
    check_quorum(settings)
    logs.configure(settings.secrets(), level=settings.log_level)
    log = logs.get_logger("irbot.serve")
    connection = _redis(settings, blocking=False)
    metrics.keep_flushing(connection)  # this process's counts (requests, retries) into the totals /metrics shows
    try:
        app = create_app(settings, connection)
    except (BoltError, SlackApiError) as exc:
        print(f"irbot: Slack did not accept SLACK_BOT_TOKEN ({_slack_reason(exc)}); check the token and SLACK_API_URL.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"irbot: cannot reach Slack at {settings.slack_api_url} ({type(exc).__name__}); check the network and SLACK_API_URL.", file=sys.stderr)
        return 1
    if settings.socket_mode:
        return _serve_socket_mode(app, connection, settings, args.host, log)
    from bot.web import http_server

    try:
        server = http_server(app, connection, settings.port, host=args.host)
    except OSError as exc:
        raise ConfigError(_listen_problem(exc, settings.port, args.host)) from None
    log.info("serving", mode="http", host=args.host, port=settings.port)
    server.run()
    return 0


def _serve_socket_mode(app, connection, settings: Settings, host: str, log) -> int:
    import threading

    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError

    from bot.web import serve_health_in_background

    try:
        serve_health_in_background(connection, settings.port, host=host)
    except OSError as exc:
        raise ConfigError(_listen_problem(exc, settings.port, host)) from None
    handler = SocketModeHandler(app, settings.slack_app_token)
    log.info("serving", mode="socket", health_port=settings.port)
    try:
        handler.connect()
    except (BoltError, SlackApiError) as exc:
        print(f"irbot: Slack did not accept SLACK_APP_TOKEN ({_slack_reason(exc)}); it should be an app-level token with "
              "connections:write, or leave it unset to serve over HTTP.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"irbot: cannot open Socket Mode's connection to Slack ({type(exc).__name__}); check the network and SLACK_API_URL.",
              file=sys.stderr)
        return 1
    threading.Event().wait()  # as SocketModeHandler.start does: its client's threads answer Slack
    return 0


def _listen_problem(exc: OSError, port: int, host: str) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"PORT {port} is already in use on {host} (another irbot serve, or another program): stop it, or set PORT to a free port."
    if exc.errno == errno.EACCES:
        return f"PORT {port} needs privileges irbot does not have: set PORT to 1024 or above."
    return f"PORT {port}: cannot listen on {host} ({exc.strerror or type(exc).__name__}); set PORT or --host to an address this host has."


def _slack_reason(exc: Exception) -> str:
    text = str(exc)
    for word in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        if word in text:
            return word
    return type(exc).__name__


def run_worker(args) -> int:
    from core import logs, metrics
    from workers.worker import work

    settings = load(os.environ, "worker")
    logs.configure(settings.secrets(), level=settings.log_level)
    connection = _redis(settings, blocking=True)
    # What the worker itself counts (catching up, killed horses' callbacks); each work horse stores its own.
    metrics.keep_flushing(connection)
    name = f"irbot-{socket.gethostname()}-{os.getpid()}"
    log = logs.get_logger("irbot.worker")
    log.info("worker starting", burst=args.burst)
    # The scheduler (with_scheduler) runs the expiry of requests nobody approved in time.
    work(connection, name, burst=args.burst, logging_level=settings.log_level, log=log)
    return 0


def run_demo(args) -> int:
    try:
        from bot.demo import run
    except ImportError as exc:
        print(f"irbot: the demo needs its extras ({exc.name} is missing): pip install 'irbot[demo]' or run make demo.", file=sys.stderr)
        return 1
    return run()


def run_findings(args) -> int:
    import boto3

    from actions import aws
    from core import logs, metrics
    from chat.slack import Slack
    from findings.consumer import FINDINGS, FindingsConsumer, queue_region

    settings = load(os.environ, "findings")
    logs.configure(settings.secrets(), level=settings.log_level)
    region = queue_region(settings.findings_queue_url, settings.aws_region)
    sqs = aws.client(boto3.Session(), "sqs", region or "us-east-1", declared=FINDINGS)
    connection = _redis(settings, blocking=True)
    consumer = FindingsConsumer(sqs, settings.findings_queue_url, Slack.from_settings(settings),
                                connection, settings.alerts_channel, settings.findings_min_severity)
    metrics.keep_flushing(connection)  # its Slack and AWS retries
    logs.get_logger("irbot.findings").info("consuming findings", queue=settings.findings_queue_url, minimum=settings.findings_min_severity)
    if args.once:
        while consumer.poll_once(wait_seconds=1):
            pass
        return 0
    consumer.run_forever()
    return 0


def run_audit_verify(args) -> int:
    import boto3

    from actions import aws
    from actions.errors import ActionError
    from core.audit import AUDIT_VERIFY, AuditTrail, load_batches, resumptions, verify

    settings = load(os.environ, "audit")
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: it should hold where the audit trail lives, e.g. redis://localhost:6379/0.")
    trail = AuditTrail(_redis(settings, blocking=False))
    batches, problems = [], []
    if settings.evidence_bucket:
        try:
            s3 = aws.client(boto3.Session(), "s3", settings.aws_region, declared=AUDIT_VERIFY)
            batches, problems = load_batches(s3, settings.evidence_bucket)
        except ActionError as exc:
            print(f"irbot: could not read the sealed batches: {exc}", file=sys.stderr)
            return 2
    problems = sorted(problems + verify(trail, batches), key=lambda b: b.seq)
    seq, head = trail.head()
    if problems:
        print(f"audit trail BROKEN at {problems[0]}")
        for problem in problems[1:]:
            print(f"  also: {problem}")
        return 1
    where = f"and {len(batches)} sealed batches in s3://{settings.evidence_bucket}/audit/" if settings.evidence_bucket else "(IR_EVIDENCE_BUCKET not set: sealed batches not checked)"
    print(f"audit trail intact: {len(trail.records())} records in Redis {where}; head #{seq} sha256 {head}")
    for note in resumptions(trail):
        # Intact as a chain, but not whole: say what was lost, every time.
        print(f"  note: at record #{note['seq']} ({note['time']}) the chain resumed from sealed record #{note['params']['sealed_head']}: "
              f"{note['params']['why']}")
    return 0


def run_audit_export(args) -> int:
    from core.audit import AuditTrail
    from core.incidents import CHANNEL_ID, DECLARED_ID, WHICH_ID, IncidentBook

    incident = args.incident.strip()
    if not (DECLARED_ID.fullmatch(incident) or CHANNEL_ID.fullmatch(incident)):
        raise ConfigError(f"--incident {incident!r} is not an incident ID: give {WHICH_ID}.")
    settings = load(os.environ, "audit")
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: it should hold where the audit trail lives, e.g. redis://localhost:6379/0.")
    connection = _redis(settings, blocking=False)
    records = AuditTrail(connection).for_incident(incident)
    declared = None if DECLARED_ID.fullmatch(incident) else IncidentBook(connection).for_channel(incident)
    if not records:
        if declared:
            print(f"irbot: {incident} is the channel of incident {declared.id}, whose records carry its ID: "
                  f"irbot audit export --incident {declared.id}", file=sys.stderr)
        else:
            print(f"irbot: the audit trail has no incident {incident}: give {WHICH_ID}.", file=sys.stderr)
        return 1
    lines = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(lines)
    print(f"{len(records)} records of {incident} exported", file=sys.stderr)
    if declared:
        # Work done in the channel before the incident was declared there keeps the channel's ID.
        print(f"  (the incident declared in this channel later, {declared.id}, has its own records: --incident {declared.id})", file=sys.stderr)
    return 0


def _break_glass(verb: str, args) -> int:
    from redis.exceptions import RedisError

    from bot import breakglass
    from core import logs, metrics

    settings = load(os.environ, "break-glass")
    if not settings.redis_url:
        raise ConfigError("REDIS_URL is not set: it should hold where irbot's queues live, e.g. redis://localhost:6379/0.")
    logs.configure(settings.secrets(), level="WARNING")
    connection = _redis(settings, blocking=False)
    try:
        return getattr(breakglass, verb)(settings, connection, args)
    finally:
        try:
            metrics.flush(connection)  # the request it made counts like one typed in Slack
        except RedisError:
            pass  # Redis went away: the command said so itself


def run_templates(args) -> int:
    from bot.templates import write

    for path in write(Path(args.out)):
        print(path)
    return 0


def run_doctor(args) -> int:
    from bot import doctor
    from core import logs

    settings = load(os.environ, "doctor")  # malformed variables are still one line each and exit 2; a missing one is a failed check
    logs.configure(settings.secrets(), level="WARNING")
    results = doctor.run(settings)
    for result in results:
        print(result.line(), flush=True)
    return 1 if any(r.status == doctor.FAIL for r in results) else 0


def run_iam_policy(args) -> int:
    from actions.accounts import partition as partition_of
    from bot.policies import PRINCIPAL_ARN, Protected, boundary_document, member_policies, policy_document

    settings = load(os.environ, "iam-policy")  # IR_ACCOUNT_ROLE, IR_ROLE_EXTERNAL_ID, IR_ACCOUNTS, checked as irbot reads them
    break_glass = tuple(a.strip() for a in args.protect.split(",") if a.strip())
    wrong = next((a for a in break_glass if not PRINCIPAL_ARN.fullmatch(a)), None)
    if wrong:
        raise ConfigError(f"--protect takes role or user ARNs, like arn:aws:iam::123456789012:role/break-glass; {wrong!r} is not one.")
    if args.quarantine:
        from actions.keys import quarantine_policy

        print(json.dumps(quarantine_policy(), indent=2))
        return 0
    if args.member:
        if not args.hub_role:
            raise ConfigError("--member needs --hub-role: irbot's own role ARN, which the member role will trust.")
        document = member_policies(args.hub_role, external_id=settings.role_external_id, member_role=settings.account_role,
                                   break_glass=break_glass)
    elif args.hub_role:
        raise ConfigError("--hub-role goes with --member (the member role's trust policy).")
    else:
        partition = args.partition or (partition_of(settings.aws_region) if settings.aws_region else "aws")
        protected = Protected(hub_role=args.hub_role_name, member_role=settings.account_role, break_glass=break_glass)
        common = {"role": settings.account_role, "organization": settings.accounts == "org", "partition": partition, "protected": protected}
        document = (boundary_document(args.bucket, **common) if args.boundary else
                    policy_document(args.bucket, process=args.process, action=args.action, part=args.part or "core", **common))
    print(json.dumps(document, indent=2))
    return 0

if __name__ == "__main__":
    sys.exit(main())
