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

    def kill(self, name: str) -> None:
        """SIGKILL the process and its RQ work horse (which runs in a process group of its own), as the OOM killer would."""
        import signal

        process = self.processes[name]
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        horses = [int(p) for p in children.read_text().split()] if children.exists() else []
        for pid in [process.pid, *horses]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(15)

    def start_again(self, name: str) -> None:
        self.processes[name] = self._start(name)

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

    def settle(self, timeout: float = 30) -> None:
        """Wait until every queued job has run: what a request was going to do is done."""
        settle(self.env["REDIS_URL"], timeout)

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




def settle(redis_url: str, timeout: float = 30) -> None:
    """Wait until irbot's queues are empty and no job is running, twice in a row."""
    import redis
    from rq.registry import StartedJobRegistry

    from core.queues import queues

    connection = redis.Redis.from_url(redis_url)
    quiet, deadline = 0, time.monotonic() + timeout
    while quiet < 2:
        busy = any(q.count or StartedJobRegistry(queue=q).count for q in queues(connection))
        quiet = 0 if busy else quiet + 1
        if time.monotonic() > deadline:
            raise TimeoutError("irbot's queues did not settle")
        time.sleep(0.1)


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


class InProcessIrbot:
    """The same bot and jobs as `irbot serve` + `irbot worker`, inside the test process: the real Bolt app
    behind a real HTTP server on loopback, signed requests, and an RQ worker in a thread draining the
    queues (scheduled jobs included). For rule tests, where starting two processes would only cost time;
    the process boundaries themselves are tested by the end-to-end tests that use `Irbot`."""

    def __init__(self, env: dict, monkeypatch):
        import threading
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        from bot.app import create_app
        from bot.web import wsgi_app
        from core.queues import SERIALIZER, connect, queues
        from core.settings import load

        for name in [k for k in os.environ if k.startswith(("AWS_", "SLACK_", "IR_"))]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.env = env
        settings = load(os.environ, "serve")
        connection = connect(settings.redis_url)

        class Server(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        self.server = make_server("127.0.0.1", 0, wsgi_app(create_app(settings, connection), connection), server_class=Server, handler_class=Quiet)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._stop = threading.Event()
        worker_connection = connect(settings.redis_url, blocking=True)
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                        threading.Thread(target=self._work, args=(queues(worker_connection), worker_connection, SERIALIZER), daemon=True)]
        for thread in self.threads:
            thread.start()

    def _work(self, queues, connection, serializer) -> None:
        from rq import SimpleWorker
        from rq.timeouts import TimerDeathPenalty

        class ThreadWorker(SimpleWorker):
            death_penalty_class = TimerDeathPenalty  # SIGALRM is the main thread's alone

            def _install_signal_handlers(self):
                pass

        while not self._stop.is_set():
            self._worker = ThreadWorker(queues, connection=connection, serializer=serializer)
            self._worker.work(burst=True, with_scheduler=True, logging_level="ERROR")
            self._stop.wait(0.05)

    post = Irbot.post
    command = Irbot.command
    click = Irbot.click
    settle = Irbot.settle

    def stop(self) -> None:
        self._stop.set()
        worker = getattr(self, "_worker", None)
        if worker is not None:
            worker._stop_requested = True  # RQ's own flag: no next job for this burst, or the next test's jobs would run here
        self.server.shutdown()
        self.server.server_close()
        for thread in self.threads:
            thread.join(120)
            assert not thread.is_alive(), f"{thread.name} did not stop: it would take the next test's jobs"
