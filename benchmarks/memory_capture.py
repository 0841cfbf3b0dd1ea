"""Memory capture throughput, measured in one run on the same loopback sshd.

    .venv/bin/python benchmarks/memory_capture.py [--mib 512]

Compares irbot's capture path (SSH → SHA-256 → a sink that discards, and → S3 on moto's
server) with the OpenSSH pipelines `ssh host cat FILE | sha256sum` and
`ssh -c aes128-gcm@openssh.com host cat FILE | openssl dgst -sha256`, then 1 against 4
targets at once (4 processes, as 4 RQ workers would). Prints MB/s and ratios.
Not a test: numbers on a shared 2-core machine move by ±10%.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actions.ssh import Endpoint, connect, load_key, stream, trusted_from_known_hosts  # noqa: E402
from standins.local_sshd import SshServer, find_sshd  # noqa: E402


def irbot_capture(server_info: tuple, command: str, sink=None) -> tuple[int, str]:
    host, port, user, key_path, known_hosts = server_info
    endpoint = Endpoint(host, port, user, "bench")
    transport, _ = connect(endpoint, load_key(key_path), trusted_from_known_hosts(known_hosts, host, port))
    digest = hashlib.sha256()
    total = 0

    def take(data: bytes) -> None:
        nonlocal total
        digest.update(data)
        total += len(data)
        if sink is not None:
            sink.write(data)

    try:
        status = stream(transport, command, take, stall_seconds=60)
    finally:
        transport.close()
    assert status == 0
    if sink is not None:
        sink.complete(digest.hexdigest())
    return total, digest.hexdigest()


class TimedSink:
    """Times the two halves of a sink: the stream and parts, then completion and the metadata copy."""

    def __init__(self, inner):
        self.inner, self.started, self.completed_at, self.finished_at = inner, time.perf_counter(), 0.0, 0.0

    def write(self, data: bytes) -> None:
        self.inner.write(data)

    def complete(self, sha256: str) -> dict:
        self.inner._finish_parts()  # the parts are all in S3 here
        self.completed_at = time.perf_counter()
        self.inner._finish_parts = lambda: None
        stored = self.inner.complete(sha256)
        self.finished_at = time.perf_counter()
        return stored


def _one(args) -> float:
    server_info, command = args
    started = time.perf_counter()
    total, _ = irbot_capture(server_info, command)
    return total / (time.perf_counter() - started)


def timed(label: str, size: int, run) -> float:
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    rate = size / seconds / 1e6
    print(f"{label:<64} {rate:8.0f} MB/s  ({seconds:.2f} s)", flush=True)
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="size of the stand-in memory image (default 512)")
    parser.add_argument("--skip-s3", action="store_true", help="leave out the run into moto's S3")
    args = parser.parse_args()
    if not find_sshd():
        print("benchmarks need an OpenSSH server: apt-get install openssh-server", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="irbot-bench-") as tmp:
        work = Path(tmp)
        server = SshServer(work, find_sshd(), rekey_limit=None)  # OpenSSH's own default rekeying
        try:
            source = work / "memory.img"
            with source.open("wb") as out:
                for _ in range(args.mib):
                    out.write(os.urandom(1 << 20))
            size = source.stat().st_size
            command = f"cat {source}"
            info = ("127.0.0.1", server.port, server.user, str(server.client_keys["ed25519"]), str(server.known_hosts))
            ssh = ["ssh", "-p", str(server.port), "-i", str(server.client_keys["ed25519"]), "-o", f"UserKnownHostsFile={server.known_hosts}",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"{server.user}@127.0.0.1"]
            subprocess.run(["cat", str(source)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
            print(f"{args.mib} MiB stand-in image, loopback sshd, {os.cpu_count()} cores\n")

            plain = timed("ssh host cat FILE | sha256sum", size, lambda: subprocess.run(
                " ".join(ssh) + f" cat {source} | sha256sum", shell=True, check=True, stdout=subprocess.DEVNULL))
            fast = timed("ssh -c aes128-gcm@openssh.com host cat FILE | openssl dgst -sha256", size, lambda: subprocess.run(
                " ".join(ssh[:1] + ["-c", "aes128-gcm@openssh.com"] + ssh[1:]) + f" cat {source} | openssl dgst -sha256",
                shell=True, check=True, stdout=subprocess.DEVNULL))
            one = timed("irbot: SSH → SHA-256 → discard", size, lambda: irbot_capture(info, command))
            with multiprocessing.get_context("fork").Pool(4) as pool:
                started = time.perf_counter()
                pool.map(_one, [(info, command)] * 4)
                seconds = time.perf_counter() - started
            four = 4 * size / seconds / 1e6
            print(f"{'irbot: 4 targets at once (4 processes), all together':<64} {four:8.0f} MB/s  ({seconds:.2f} s)")
            s3_rate = None
            if not args.skip_s3:
                s3_rate = _into_moto(info, command, size)
            print()
            print(f"irbot single stream / (ssh | sha256sum)           = {one / plain:.2f}x")
            print(f"irbot single stream / (ssh aes128-gcm | openssl)  = {one / fast:.2f}x")
            print(f"4 targets together / 1 target                     = {four / one:.2f}x")
            if s3_rate:
                print(f"irbot streaming into moto S3 / to discard         = {s3_rate / one:.2f}x (moto's S3 is the limit)")
        finally:
            server.stop()
    return 0


def _into_moto(info, command: str, size: int) -> float:
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from core.evidence import EvidenceStore
    from standins.moto_object_lock import locking_like_aws

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        with locking_like_aws():  # moto locks no multipart upload, and wants Content-MD5 on a locked copy
            host, port = server.get_host_and_port()
            s3 = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
            s3.create_bucket(Bucket="bench-evidence", ObjectLockEnabledForBucket=True)
            store = EvidenceStore(s3, "bench-evidence")
            sink = TimedSink(store.open_stream("bench/memory.lime", part_size=64 << 20))
            total = timed("irbot: SSH → SHA-256 → S3 multipart on moto's server, in all", size, lambda: irbot_capture(info, command, sink))
            streamed = size / (sink.completed_at - sink.started) / 1e6
            print(f"{'  of which streaming and uploading the parts':<64} {streamed:8.0f} MB/s")
            print(f"{'  and completing plus the copy from the stage (moto copies slowly)':<64} {sink.finished_at - sink.completed_at:8.1f} s")
            return streamed
    finally:
        server.stop()


if __name__ == "__main__":
    if shutil.which("openssl") is None:
        print("note: openssl is not installed; the second pipeline will fail", file=sys.stderr)
    sys.exit(main())
