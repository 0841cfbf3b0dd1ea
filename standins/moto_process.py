"""moto's server in a process of its own, for the tests: `python -m standins.moto_process` prints
"port N" once it serves on loopback, and serves until its standard input closes.

Why a process: the in-process bot of the rule tests (tests/processes.py, InProcessIrbot), its RQ worker
thread and a moto server in the same interpreter share one GIL, and under CPU load the bot could miss
Slack's 3 s ack while moto held it. AWS is another machine; here it is at least another process.

It checks EC2 and IAM calls as AWS does (standins/moto_authorization.py), which matters only while a
test has switched moto's enforcement on through /moto-api/reset-auth, and locks objects as AWS does
(standins/moto_object_lock.py).
"""

from __future__ import annotations

import sys

from moto.server import ThreadedMotoServer

from standins.moto_authorization import authorizing_like_aws
from standins.moto_object_lock import locking_like_aws


def main() -> int:
    with authorizing_like_aws(), locking_like_aws():
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        print(f"port {server.get_host_and_port()[1]}", flush=True)
        sys.stdin.read()  # the test session holds the other end; when it ends, so does moto
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
