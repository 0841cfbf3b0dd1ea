"""The irbot command as a user runs it: configuration errors, help, the IAM policy."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from tests.helpers import BOT_TOKEN, RESPONDER, SIGNING_SECRET
from core import logs

IRBOT = str(Path(sys.executable).with_name("irbot"))

GOOD = {
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "IR_RESPONDERS": RESPONDER,
    "IR_APPROVERS": "U0BOB0002",
    "IR_EVIDENCE_BUCKET": "ir-evidence",
    "AWS_REGION": "us-east-1",
}


def irbot(*args: str, env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_", "REDIS_", "PORT"))}
    return subprocess.run([IRBOT, *args], env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "command, change, expected",
    [
        ("serve", {"SLACK_BOT_TOKEN": None}, "irbot: SLACK_BOT_TOKEN is not set: it should hold the bot token"),
        ("serve", {"SLACK_BOT_TOKEN": "xoxp-user-token"}, "irbot: SLACK_BOT_TOKEN is malformed: it should hold a bot token starting with xoxb-."),
        ("serve", {"SLACK_SIGNING_SECRET": None}, "irbot: SLACK_SIGNING_SECRET is not set"),
        ("serve", {"IR_RESPONDERS": None}, "irbot: IR_RESPONDERS is not set: it should hold comma-separated Slack user IDs allowed to run /ir (or set IR_RESPONDER_GROUP)."),
        ("serve", {"IR_RESPONDERS": "alice,bob"}, "irbot: IR_RESPONDERS is malformed: it should hold comma-separated Slack user IDs such as U012ABCDEF,U034GHIJKL."),
        ("serve", {"REDIS_URL": "localhost:6379"}, "irbot: REDIS_URL is malformed"),
        ("serve", {"SLACK_API_URL": "http://localhost:9/"}, "irbot: SLACK_API_URL is malformed: it should hold an http(s) URL ending in /api/"),
        ("serve", {"PORT": "http"}, "irbot: PORT is malformed: it should hold a TCP port number"),
        ("worker", {"IR_EVIDENCE_BUCKET": None}, "irbot: IR_EVIDENCE_BUCKET is not set"),
        ("serve", {"IR_EVIDENCE_BUCKET": None}, "irbot: IR_EVIDENCE_BUCKET is not set"),
        ("worker", {"IR_EVIDENCE_RETENTION_DAYS": "ninety"}, "irbot: IR_EVIDENCE_RETENTION_DAYS is malformed: it should hold a number of days"),
        ("worker", {"IR_EVIDENCE_LOCK_MODE": "LEGAL"}, "irbot: IR_EVIDENCE_LOCK_MODE is malformed: it should hold COMPLIANCE or GOVERNANCE."),
        ("worker", {"AWS_REGION": None}, "irbot: AWS_REGION is not set"),
        ("worker", {"REDIS_URL": "redis://:s3cretpass@127.0.0.1:1/0"}, "irbot: REDIS_URL: cannot reach Redis at redis://:***@127.0.0.1:1/0"),
    ],
)
def test_bad_configuration_stops_start_up_with_one_line_naming_the_variable(command, change, expected):
    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    result = irbot(command, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and "s3cretpass" not in result.stderr


def test_help_lists_commands_and_every_variable():
    result = irbot("--help", env={})
    assert result.returncode == 0
    for word in ("serve", "worker", "demo", "iam-policy", "SLACK_BOT_TOKEN", "SLACK_API_URL", "IR_EVIDENCE_BUCKET", "IR_RESPONDERS", "IR_APPROVERS", "REDIS_URL"):
        assert word in result.stdout


def test_iam_policy_names_what_collect_and_the_evidence_store_need():
    result = irbot("iam-policy", "--bucket", "my-evidence", env={})
    policy = json.loads(result.stdout)
    actions = {a for s in policy["Statement"] for a in s["Action"]}
    assert {"ec2:Describe*", "ec2:GetConsoleOutput", "s3:PutObject", "s3:PutObjectRetention"} <= actions  # describes as one wildcard
    assert "arn:aws:s3:::my-evidence/*" in next(s for s in policy["Statement"] if s["Sid"] == "Evidence")["Resource"]
    assert not any(a.endswith(":*") or a == "*" for a in actions)


def test_secrets_are_scrubbed_from_irbots_and_libraries_log_lines():
    stream = io.StringIO()
    logs.configure([SIGNING_SECRET], stream=stream)
    try:
        logging.getLogger("some.library").warning("sending Authorization: Bearer %s", BOT_TOKEN)
        structlog.stdlib.get_logger("irbot").info("request", signing_secret=SIGNING_SECRET, detail=f"secret={SIGNING_SECRET}", app="xapp-1-A0-123-abcdef")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert BOT_TOKEN not in text and SIGNING_SECRET not in text and "xapp-1-A0-123-abcdef" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["event"] == "sending Authorization: Bearer [redacted]"
    assert lines[1]["signing_secret"] == "[redacted]" and lines[1]["detail"] == "secret=[redacted]"


def subcommands(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every subcommand the parser has, nested ones (audit verify) included, so a new one is checked too."""
    import argparse

    from bot.cli import build_parser

    parser = parser or build_parser()
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(subcommands(sub, (*prefix, name)))
    return found


def test_every_subcommands_help_says_what_it_does():
    every = subcommands()
    assert ("serve",) in every and ("audit", "export") in every and len(every) >= 13
    for command in every:
        result = subprocess.run([sys.executable, "-m", "bot.cli", *command, "--help"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
        assert result.returncode == 0, command
        # argparse prints the usage, then the description as its own paragraph, then the arguments.
        paragraphs = result.stdout.split("\n\n")
        assert not paragraphs[1].startswith(("options:", "positional arguments:", "audit commands:")), command
        description = " ".join(paragraphs[1].split())
        assert not description.endswith(":") and description.endswith("."), (command, description)
        assert len(description) > 40, (command, description)
