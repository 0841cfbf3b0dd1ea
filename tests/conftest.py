"""Real parts for the tests: a redis-server, moto's server over HTTP, and a fake Slack Web API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
import redis

from actions.aws import CHECK_VARIABLE
from standins.fake_slack import FakeSlack
from tests.helpers import BOT_TOKEN, RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER, free_port, irbot_variables, make_world

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- the permission contract -----------------------------------------------------------------
# Every AWS client irbot makes checks each call against its caller's declaration (actions.aws);
# the whole suite, irbot's own processes included, notes undeclared calls in one file, and any
# line there fails the run.


def pytest_configure(config):
    if not os.environ.get(CHECK_VARIABLE):
        fd, path = tempfile.mkstemp(prefix="irbot-undeclared-", suffix=".jsonl")
        os.close(fd)
        os.environ[CHECK_VARIABLE] = path  # inherited by xdist's workers and by every irbot process a test starts
        config.irbot_check_file = path


def pytest_sessionfinish(session, exitstatus):
    path = getattr(session.config, "irbot_check_file", None)
    if not path:
        return
    lines = sorted(set(open(path, encoding="utf-8").read().splitlines()))
    os.unlink(path)
    if lines:
        report = "\n".join(f"  {json.loads(line)['who']} called {json.loads(line)['call']}" for line in lines)
        session.config.get_terminal_writer().line(f"\nUndeclared AWS calls (add them to the caller's permissions):\n{report}", red=True)
        session.exitstatus = 1


def need_binary(name: str) -> str:
    """The path of a system binary; skipped when missing, except in CI, where that fails the run."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        message = f"{name} is not installed (make test installs it: deploy/system-deps.sh)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextlib.contextmanager
def redis_server(workdir, *options: str):
    """A redis-server on a free loopback port, started with ``options`` (e.g. "--appendonly", "yes"); yields its URL."""
    binary = need_binary("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("redis-server did not start")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis"), "--appendonly", "no") as url:
        yield url


@pytest.fixture
def redis_conn(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    return client


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """moto's server in its own process (standins/moto_process.py), so it never holds the GIL of a test's bot."""
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "standins.moto_process"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
    line = process.stdout.readline()
    if not line.startswith("port "):
        process.kill()
        pytest.fail(f"moto's server did not start: {line!r} {log.read_text()[-2000:]}")
    yield f"http://127.0.0.1:{int(line.split()[1])}"
    process.stdin.close()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIRBOTTESTKEY0001",
    "AWS_SECRET_ACCESS_KEY": "irbot/test/secret/DO-NOT-LOG/0123456789abcd",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A clean simulated AWS account, reached over HTTP through AWS_ENDPOINT_URL."""
    urllib.request.urlopen(urllib.request.Request(moto_endpoint + "/moto-api/reset", method="POST")).read()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return moto_endpoint


@pytest.fixture
def slack():
    fake = FakeSlack(BOT_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def module_slack():
    """One fake Slack for a module whose irbot processes live as long as the module."""
    fake = FakeSlack(BOT_TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture
def irbot_env(aws, slack, redis_conn, redis_url, monkeypatch):
    """Everything irbot reads from its environment, pointed at the test's real parts (Redis emptied)."""
    values = irbot_variables(slack.api_url, redis_url)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**AWS_ENV, "AWS_ENDPOINT_URL": aws, **values}


@pytest.fixture
def world(aws, redis_conn):
    """A clean account with a VPC, a running instance and an Object Lock evidence bucket; Redis emptied."""
    return make_world()


@pytest.fixture
def start_irbot(moto_endpoint, redis_url, slack, tmp_path):
    """Starts `irbot serve` + `irbot worker` with the test's settings; stops them after the test."""
    from tests.processes import Irbot, irbot_environment

    started = []

    def start(**overrides):
        env = irbot_environment(moto_endpoint, redis_url, slack, IR_RESPONDERS=f"{RESPONDER},{SECOND_RESPONDER},{THIRD_RESPONDER}", **overrides)
        logdir = tmp_path / f"logs-{len(started)}"
        logdir.mkdir()
        processes = Irbot(env, logdir)
        started.append(processes)
        processes.wait_until_ready()
        return processes

    yield start
    for processes in started:
        processes.stop()


@pytest.fixture
def run_irbot(moto_endpoint, redis_url, slack, monkeypatch):
    """Like start_irbot, with the bot and the worker inside the test process (see InProcessIrbot)."""
    from tests.processes import InProcessIrbot, irbot_environment

    started = []

    def start(**overrides):
        env = irbot_environment(moto_endpoint, redis_url, slack, IR_RESPONDERS=f"{RESPONDER},{SECOND_RESPONDER},{THIRD_RESPONDER}", **overrides)
        started.append(InProcessIrbot(env, monkeypatch))
        return started[-1]

    yield start
    for irbot in started:
        irbot.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    from standins.local_sshd import SshServer

    binary = need_binary("sshd")
    need_binary("ssh-keygen")
    server = SshServer(tmp_path_factory.mktemp("sshd"), binary)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memory_source(tmp_path_factory):
    """The stand-in for a host's memory: 40 MiB of random bytes (past sshd's 16M rekey limit twice)."""
    path = tmp_path_factory.mktemp("memory") / "memory.bin"
    path.write_bytes(os.urandom(40 << 20))
    return path
