"""`irbot serve` and `irbot worker` as subprocesses, started the way a user starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import AWS_ENV
from tests.helpers import free_port, irbot_variables, signed_headers, slash_command

IRBOT = str(Path(sys.executable).with_name("irbot"))


class Irbot:
    """The two processes a user starts, and what they wrote to their logs."""

    def __init__(self, env: dict, logdir: Path):
        self.env = env
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.logdir = logdir
        self.logs = {name: logdir / f"{name}.log" for name in ("serve", "worker")}
        self.processes = {name: self._start(name) for name in ("worker", "serve")}

    def _start(self, name: str) -> subprocess.Popen:
        log = self.logs[name].open("ab")
        return subprocess.Popen([IRBOT, name], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def add_workers(self, count: int) -> None:
        """More `irbot worker` processes on the same queues, as an operator scales out."""
        for n in range(count):
            name = f"worker-{len(self.processes)}"
            self.logs[name] = self.logdir / f"{name}.log"
            log = self.logs[name].open("ab")
            self.processes[name] = subprocess.Popen([IRBOT, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def restart(self, *names: str) -> None:
        """Stop and start again, as after a crash or a deploy; whatever lived only in memory is gone."""
        for name in names:
            self.processes[name].terminate()
            self.processes[name].wait(15)
            self.processes[name] = self._start(name)
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"irbot {name} exited: {self.logs[name].read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("irbot serve did not answer /healthz")

    def post(self, body: str, headers: dict) -> tuple[int, dict | str, float]:
        request = urllib.request.Request(self.url + "/slack/events", data=body.encode(), headers=headers, method="POST")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read().decode()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read().decode(), exc.code
        elapsed = time.monotonic() - started
        try:
            return status, json.loads(raw), elapsed
        except ValueError:
            return status, raw, elapsed

    def command(self, text: str, **kwargs) -> tuple[int, dict | str, float]:
        body = slash_command(text, **kwargs)
        return self.post(body, signed_headers(body))

    def click(self, user: str, action_id: str, request_id: str, *, channel: str = "C0INCIDENT") -> tuple[str, dict]:
        """A button press as Slack sends it (block_actions); returns the signed body and headers, already sent."""
        body = block_action(user, action_id, request_id, channel=channel)
        headers = signed_headers(body)
        status, _, elapsed = self.post(body, headers)
        assert status == 200 and elapsed < 3
        return body, headers

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs.values())

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()




def block_action(user: str, action_id: str, request_id: str, *, channel: str = "C0INCIDENT") -> str:
    from urllib.parse import urlencode

    payload = {
        "type": "block_actions",
        "team": {"id": "T0IRBOT", "domain": "irbot-test"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0IRBOT"},
        "api_app_id": "A0IRBOT",
        "token": "deprecated-verification-token",
        "container": {"type": "message", "channel_id": channel, "is_ephemeral": False},
        "trigger_id": "1234.5678.abcd",
        "channel": {"id": channel, "name": "incident-test"},
        "message": {"type": "message", "text": "card", "ts": "0"},
        "response_url": "",
        "actions": [{"type": "button", "action_id": action_id, "block_id": f"approval:{request_id}", "value": request_id,
                     "text": {"type": "plain_text", "text": action_id}, "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def irbot_environment(moto_endpoint: str, redis_url: str, slack, **overrides: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "IR_"))}
    env.update(AWS_ENV)
    env.update(irbot_variables(slack.api_url, redis_url))
    env.update({"AWS_ENDPOINT_URL": moto_endpoint, "PORT": str(free_port()), "PYTHONUNBUFFERED": "1"})
    env.update(overrides)
    return env
