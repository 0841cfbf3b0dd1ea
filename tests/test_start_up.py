"""Starting irbot as a new user does: every configuration problem in one run, the example env file, and
start-up failures (a busy port, Slack refusing a token) as one sentence, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import VARIABLES, ConfigError, load
from standins.fake_slack import FakeSlack
from tests.conftest import AWS_ENV
from tests.helpers import BOT_TOKEN, free_port, irbot_variables

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "irbot.env.example"


def irbot(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """`irbot ARGS` as a process, with only ``env`` for irbot's settings (none inherited from the test's shell)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_", "REDIS_", "PORT"))}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], env={**base, **env}, capture_output=True, text=True, timeout=timeout)


def example_file() -> dict[str, str]:
    """The variables deploy/irbot.env.example sets, as docker compose's env_file reads them, with the
    REDIS_URL docker-compose.yml adds."""
    lines = [line.strip() for line in EXAMPLE.read_text().splitlines()]
    return {**dict(line.split("=", 1) for line in lines if line and not line.startswith("#")), "REDIS_URL": "redis://redis:6379/0"}


@pytest.mark.parametrize("command", ["serve", "worker", "findings"])
def test_an_empty_environment_lists_every_required_variable_in_one_run(command):
    result = irbot(command, env={})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    needed = [v.name for v in VARIABLES if command in v.needed_by]
    lines = result.stderr.splitlines()
    for name in needed:
        # One line each: the variable, what's wrong, what it should hold.
        assert [line for line in lines if line.startswith(f"  - {name} is not set: it should hold ")], name
    assert lines[0] == f"irbot: {len(needed)} settings need fixing before irbot can start:"
    assert "irbot --help lists every variable" in lines[-1]


def test_missing_and_malformed_variables_come_together():
    result = irbot("serve", env={"SLACK_BOT_TOKEN": "xoxp-user-token", "PORT": "http", "IR_APPROVERS": "bob"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for expected in ("SLACK_BOT_TOKEN is malformed", "PORT is malformed", "IR_APPROVERS is malformed",
                     "REDIS_URL is not set", "IR_RESPONDERS is not set", "SLACK_SIGNING_SECRET is not set"):
        assert expected in result.stderr


def test_the_example_env_file_is_refused_until_filled_in_and_then_serves_over_http():
    example = example_file()
    assert "SLACK_APP_TOKEN" not in example  # uncommenting it is what switches to Socket Mode
    assert "SLACK_APP_TOKEN" in EXAMPLE.read_text()
    with pytest.raises(ConfigError) as refused:
        load(example, "serve")
    assert [p.split(" ")[0] for p in refused.value.problems] == ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET"]
    assert all("placeholder" in p for p in refused.value.problems)
    filled = {**example, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": "0123abcd"}
    assert not load(filled, "serve").socket_mode


def test_a_placeholder_app_token_is_a_sentence_not_socket_mode(tmp_path):
    env = {**irbot_variables("http://127.0.0.1:9/api/", "redis://127.0.0.1:9/0"), "SLACK_APP_TOKEN": "xapp-..."}
    result = irbot("serve", env=env)
    assert result.returncode == 2
    assert result.stderr == ("irbot: SLACK_APP_TOKEN still holds the placeholder 'xapp-...' from the example configuration: put in an "
                             "app-level token (Basic Information page, App-Level Tokens), or remove the line to serve over HTTP.\n")


@pytest.fixture
def serve_env(moto_endpoint, redis_url, slack, redis_conn):
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, **irbot_variables(slack.api_url, redis_url), "PORT": str(free_port())}
    return env


@pytest.mark.parametrize("socket_mode", [False, True], ids=["http", "socket-mode"])
def test_a_busy_port_is_one_sentence(serve_env, socket_mode, slack):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**serve_env, "PORT": str(port)}
        if socket_mode:
            env["SLACK_APP_TOKEN"] = "xapp-1-A0IRBOT-123456-abcdefabcdef"
        result = irbot("serve", "--host", "127.0.0.1", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (f"irbot: PORT {port} is already in use on 127.0.0.1 (another irbot serve, or another "
                                             "program): stop it, or set PORT to a free port.")


def test_slack_refusing_the_app_token_is_one_sentence(serve_env):
    slack = FakeSlack(BOT_TOKEN, app_token="xapp-1-A0IRBOT-123456-theoneslackknows").start()
    try:
        env = {**serve_env, "SLACK_API_URL": slack.api_url, "SLACK_APP_TOKEN": "xapp-1-A0IRBOT-123456-revokedlongago"}
        result = irbot("serve", env=env)
    finally:
        slack.stop()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("irbot: Slack did not accept SLACK_APP_TOKEN (invalid_auth); it should be an app-level token")


def test_slack_refusing_the_bot_token_is_one_sentence(serve_env):
    result = irbot("serve", env={**serve_env, "SLACK_BOT_TOKEN": "xoxb-not-the-one-slack-knows"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "irbot: Slack did not accept SLACK_BOT_TOKEN (invalid_auth); check the token and SLACK_API_URL."


def test_redis_unreachable_at_start_is_one_sentence(serve_env):
    result = irbot("serve", env={**serve_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("irbot: REDIS_URL: cannot reach Redis at redis://127.0.0.1:")


def test_serve_starts_without_library_warnings(start_irbot):
    irbot_processes = start_irbot()
    start_up = irbot_processes.logs["serve"].read_text()
    assert '"serving"' in start_up  # it did start, and logged that it did
    assert "will be unused" not in start_up
    assert "WARNING" not in start_up.upper().replace("IR_LOG_LEVEL", "")
