"""A deploy stops `irbot worker` with SIGTERM: an idle worker exits at once, rather than starting its loop again."""

from __future__ import annotations

import signal
import subprocess
import time

from rq import Worker

from tests.processes import IRBOT, irbot_environment


def test_an_idle_worker_exits_on_sigterm(moto_endpoint, redis_url, redis_conn, slack, tmp_path):
    log = tmp_path / "worker.log"
    process = subprocess.Popen([IRBOT, "worker"], env=irbot_environment(moto_endpoint, redis_url, slack),
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not Worker.all(connection=redis_conn):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        time.sleep(1)  # in its wait for a job, idle
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log.read_text()
        assert "starting again" not in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
