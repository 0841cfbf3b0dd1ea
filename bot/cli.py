"""The irbot command: serve, worker, demo, iam-policy."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from urllib.parse import urlsplit, urlunsplit

from workers.settings import VARIABLES, ConfigError, Settings, load


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except ConfigError as exc:
        print(f"irbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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
    serve = commands.add_parser("serve", help="answer Slack: Socket Mode if SLACK_APP_TOKEN is set, else HTTP on $PORT")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on in HTTP mode (default 0.0.0.0)")
    serve.set_defaults(run=run_serve)
    worker = commands.add_parser("worker", help="run an RQ worker for all of irbot's queues")
    worker.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    worker.set_defaults(run=run_worker)
    demo = commands.add_parser("demo", help="play a scripted incident on a simulated AWS account and Slack; no setup needed")
    demo.set_defaults(run=run_demo)
    policy = commands.add_parser("iam-policy", help="print the least-privilege IAM policy irbot's AWS identity needs")
    policy.add_argument("--bucket", default=os.environ.get("IR_EVIDENCE_BUCKET", "EVIDENCE-BUCKET"), help="the evidence bucket (default $IR_EVIDENCE_BUCKET)")
    policy.set_defaults(run=run_iam_policy)
    return parser


def redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _redis(settings: Settings, *, blocking: bool):
    from redis.exceptions import RedisError

    from workers.queues import connect

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
    from workers import logs

    settings = load(os.environ, "serve")
    logs.configure(settings.secrets(), level=settings.log_level)
    log = logs.get_logger("irbot.serve")
    connection = _redis(settings, blocking=False)
    try:
        app = create_app(settings, connection)
    except (BoltError, SlackApiError) as exc:
        print(f"irbot: Slack did not accept SLACK_BOT_TOKEN ({_slack_reason(exc)}); check the token and SLACK_API_URL.", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"irbot: cannot reach Slack at {settings.slack_api_url} ({type(exc).__name__}); check the network and SLACK_API_URL.", file=sys.stderr)
        return 1
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("serving", mode="socket")
        SocketModeHandler(app, settings.slack_app_token).start()
        return 0
    from bot.web import serve

    log.info("serving", mode="http", host=args.host, port=settings.port)
    serve(app, connection, settings.port, host=args.host)
    return 0


def _slack_reason(exc: Exception) -> str:
    text = str(exc)
    for word in ("invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"):
        if word in text:
            return word
    return type(exc).__name__


def run_worker(args) -> int:
    from rq import Worker

    from workers import logs
    from workers.queues import SERIALIZER, queues

    settings = load(os.environ, "worker")
    logs.configure(settings.secrets(), level=settings.log_level)
    connection = _redis(settings, blocking=True)
    name = f"irbot-{socket.gethostname()}-{os.getpid()}"
    worker = Worker(queues(connection), connection=connection, serializer=SERIALIZER, name=name)
    logs.get_logger("irbot.worker").info("worker starting", queues=[q.name for q in worker.queues], burst=args.burst)
    worker.work(burst=args.burst, with_scheduler=False, logging_level=settings.log_level)
    return 0


def run_demo(args) -> int:
    try:
        from bot.demo import run
    except ImportError as exc:
        print(f"irbot: the demo needs its extras ({exc.name} is missing): pip install 'irbot[demo]' or run make demo.", file=sys.stderr)
        return 1
    return run()


def run_iam_policy(args) -> int:
    from actions.registry import permissions
    from workers.evidence import EVIDENCE_PERMISSIONS

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "IrbotActions", "Effect": "Allow", "Action": permissions(), "Resource": "*"},
            {
                "Sid": "IrbotEvidence",
                "Effect": "Allow",
                "Action": sorted(EVIDENCE_PERMISSIONS),
                "Resource": [f"arn:aws:s3:::{args.bucket}", f"arn:aws:s3:::{args.bucket}/*"],
            },
        ],
    }
    print(json.dumps(policy, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
