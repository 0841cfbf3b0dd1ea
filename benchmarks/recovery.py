"""How long a killed worker's request takes to be resumed and finished, measured on real parts.

    .venv/bin/python benchmarks/recovery.py [--runs 3]

Each run: a redis-server, moto's server, the fake Slack, `irbot serve` and `irbot worker` as
processes; `/ir isolate` approved by a second person; the worker and its work horse SIGKILLed while
the interface sits in the allow-all group (a 60 s untrack pause); a fresh worker started. Prints
the seconds from the kill to the request's card saying Done, and where they went: until RQ
counts the job abandoned (the heartbeat grace), until a worker's maintenance finds it, and the
second run of the steps. Not a test: the numbers depend on when the kill lands in the worker's cycle.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402
import redis  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from standins.fake_slack import FakeSlack  # noqa: E402
from tests.helpers import BOT_TOKEN, CHANNEL, RESPONDER, SECOND_RESPONDER, THIRD_RESPONDER, free_port, make_world  # noqa: E402
from tests.processes import Irbot, irbot_environment  # noqa: E402
from workers.worker import HEARTBEAT_GRACE_SECONDS, JOB_HEARTBEAT_SECONDS, MAINTENANCE_SECONDS  # noqa: E402


def wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise TimeoutError


def one_run(redis_url: str, moto_url: str, slack: FakeSlack, logdir: Path) -> float:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST")).read()
    redis.Redis.from_url(redis_url).flushall()
    slack.reset()
    world = make_world()
    env = irbot_environment(moto_url, redis_url, slack, IR_RESPONDERS=f"{RESPONDER},{SECOND_RESPONDER},{THIRD_RESPONDER}",
                            IR_UNTRACK_PAUSE_SECONDS="60")
    irbot = Irbot(env, logdir)
    try:
        irbot.wait_until_ready()
        _, reply, _ = irbot.command(f"isolate {world['instance']}")
        request_id = re.search(r"request `([0-9a-f]{12})`", reply["text"]).group(1)
        card = slack.wait_for(lambda s: next((m for m in s.messages(CHANNEL) if "Approval needed" in m.get("text", "")), None))
        irbot.click(SECOND_RESPONDER, "ir_approve", request_id)
        ec2 = boto3.client("ec2")

        def allow_all() -> bool:
            groups = ec2.describe_instances(InstanceIds=[world["instance"]])["Reservations"][0]["Instances"][0]["SecurityGroups"]
            return [g["GroupName"] for g in groups] == [f"irbot-untrack-{world['vpc']}"]

        wait(allow_all, 60)
        irbot.kill("worker")
        killed = time.monotonic()
        irbot.start_again("worker")
        slack.wait_for(lambda s: "Done" in s.current(CHANNEL, card["ts"])["text"], timeout=300)
        return time.monotonic() - killed
    finally:
        irbot.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "AKIAIRBOTTESTKEY0001", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_REGION": "us-east-1"}.items():
        os.environ[name] = value
    work = Path(tempfile.mkdtemp(prefix="irbot-recovery-"))
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--save", "", "--dir", str(work)],
                              stdout=subprocess.DEVNULL)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, moto_port = moto.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{moto_port}"
    slack = FakeSlack(BOT_TOKEN).start()
    try:
        time.sleep(0.5)
        seconds = [one_run(f"redis://127.0.0.1:{port}/0", os.environ["AWS_ENDPOINT_URL"], slack, work) for _ in range(args.runs)]
    finally:
        slack.stop()
        moto.stop()
        server.terminate()
    print(f"settings: job heartbeat every {JOB_HEARTBEAT_SECONDS} s, abandoned {HEARTBEAT_GRACE_SECONDS} s after a missed one, "
          f"maintenance every {MAINTENANCE_SECONDS} s")
    for n, value in enumerate(seconds, 1):
        print(f"run {n}: killed → resumed and Done in {value:.1f} s")
    print(f"worst {max(seconds):.1f} s, best {min(seconds):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
