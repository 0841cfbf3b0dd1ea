"""hunt-key across an organization: every account × every region at once, against one account after another.

    .venv/bin/python benchmarks/hunt_accounts.py [--accounts 20] [--latency 0.1] [--concurrency 32]

moto's server runs as its own process; irbot's calls reach it through the test proxy
(standins/aws_proxy.py), which adds ``--latency`` seconds to every call, as a far region's round
trip does. Each member account gets an instance in two regions and an IAM user with a key; irbot
assumes a role in each, as a worker does (actions/accounts.py). moto has no CloudTrail
LookupEvents, so each region's lookup is a stand-in that costs one round trip and finds nothing.
moto builds each account's region on its first call there (AWS has no such cost), so every account
and region is touched once before the timing starts.

Three ways, the same hunt and the same findings:
- organization: one hunt-key with --accounts all, IR_HUNT_CONCURRENCY calls at once;
- one account after another, one call at a time (a script looping over accounts);
- one account after another, each account's regions in parallel (hunt-key before the organization).
Not a test: on a shared 2-core machine the numbers move by ±10%.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402
import botocore.endpoint  # noqa: E402

from actions.accounts import AccountSettings, Accounts  # noqa: E402
from actions.context import RunContext  # noqa: E402
from actions.hunt import hunt_key  # noqa: E402
from actions.steps import StepLog  # noqa: E402
from tests.helpers import free_port  # noqa: E402

OWN = "123456789012"
REGION = "us-east-1"
FAR = "ap-southeast-2"


class OneRoundTrip:
    """CloudTrail's LookupEvents as moto can't serve it: one round trip per region, no events."""

    count = 0

    def __init__(self, latency: float):
        self.latency = latency

    def lookup(self, session, region, access_key_id, since):
        OneRoundTrip.count += 1  # under the GIL; a benchmark's tally
        time.sleep(self.latency)
        return []


PROXY = """
import sys, time
from standins.aws_proxy import AwsProxy
proxy = AwsProxy(sys.argv[1], latency=float(sys.argv[2])).start()
print(proxy.url, flush=True)
while True:
    time.sleep(3600)
"""


def start_proxy(moto_url: str, latency: float) -> tuple[subprocess.Popen, str]:
    """The proxy in a process of its own, so its work isn't counted as irbot's (and has its own GIL)."""
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, moto_url, str(latency)], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parent.parent)
    return proxy, proxy.stdout.readline().strip()


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            return server, url
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def seed(members: list[str]) -> str:
    """Each member: an instance in us-east-1 and one far away, a user with a key. Returns a key to hunt."""
    sts = boto3.client("sts", region_name=REGION)
    key = None
    for account in members:
        found = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="seed")["Credentials"]
        session = boto3.Session(aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                                aws_session_token=found["SessionToken"])
        for region in (REGION, FAR):
            ec2 = session.client("ec2", region_name=region)
            image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
            ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
        iam = session.client("iam")
        iam.create_user(UserName="deploy-bot")
        key = key or iam.create_access_key(UserName="deploy-bot")["AccessKey"]["AccessKeyId"]
    return key


def warm(members: list[str]) -> None:
    """moto builds an account's region (default VPC, images, …) on its first call there; AWS has nothing
    like it. Each account × region is touched once before any timing, straight to moto."""
    sts = boto3.client("sts", region_name=REGION)
    regions = [r["RegionName"] for r in boto3.client("ec2", region_name=REGION).describe_regions()["Regions"]]
    for account in [OWN, *members]:
        found = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="warm")["Credentials"]
        session = boto3.Session(aws_access_key_id=found["AccessKeyId"], aws_secret_access_key=found["SecretAccessKey"],
                                aws_session_token=found["SessionToken"])
        for region in regions:
            session.client("ec2", region_name=region).describe_key_pairs()
            session.client("lambda", region_name=region).list_functions()


def hunt(accounts: Accounts, key: str, which: str, concurrency: int, latency: float, run: str) -> tuple[float, int]:
    def session_in(account: str):
        return accounts.session(account, request_id=run, person="UBENCH")

    context = RunContext(account=OWN, session_in=session_in, allowed_accounts=lambda: tuple(sorted(accounts.allowed() - {OWN})),
                         concurrency=concurrency, events=OneRoundTrip(latency))
    started = time.monotonic()
    own = accounts.session(OWN, request_id=run, person="UBENCH")  # as the worker makes it: sharing parsed service models
    result = hunt_key(own, key, REGION, context=context, steps=StepLog(), accounts=which)
    return time.monotonic() - started, len([f for f in result.findings if f["kind"] == "instance"])


class Sent:
    """Counts the HTTP requests botocore sends (each AWS call, and each page of one)."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()
        original = botocore.endpoint.Endpoint._send

        def send(endpoint, request):
            with self._lock:
                self.count += 1
            return original(endpoint, request)

        botocore.endpoint.Endpoint._send = send


SENT = Sent()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=20, help="member accounts (default 20)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds to every call (default 0.1)")
    parser.add_argument("--concurrency", type=int, default=32, help="IR_HUNT_CONCURRENCY for the organization hunt (default 32)")
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION,
                       "AWS_DEFAULT_REGION": REGION})
    server, moto_url = start_moto()
    proxy, proxy_url = start_proxy(moto_url, args.latency)
    try:
        members = [f"{200000000000 + i:012d}" for i in range(args.accounts)]
        os.environ["AWS_ENDPOINT_URL"] = moto_url  # seeding goes straight to moto
        key = seed(members)
        warm(members)
        os.environ["AWS_ENDPOINT_URL"] = proxy_url  # irbot's calls pay the latency
        accounts = Accounts(boto3.Session(region_name=REGION), AccountSettings(accounts=tuple(members)), REGION)
        print(f"{args.accounts} member accounts, {args.latency * 1000:.0f} ms added to every AWS call, moto_server in its own process")

        seconds, found = hunt(accounts, key, "all", args.concurrency, args.latency, "org")
        print(f"organization, {args.concurrency} calls at once: {seconds:6.1f} s, {found} instances found")
        calls_before, lookups_before = SENT.count, OneRoundTrip.count
        slow, found_slow = 0.0, 0
        for account in members:
            s, f = hunt(accounts, key, account, 1, args.latency, f"seq-{account}")
            slow, found_slow = slow + s, found_slow + f
        calls, lookups = SENT.count - calls_before, OneRoundTrip.count - lookups_before
        print(f"one account after another, one call at a time: {slow:6.1f} s, {found_slow} instances found ({calls} AWS calls, {lookups} lookups)"
              f" -> {slow / seconds:.1f}x")
        per_account, found_per = 0.0, 0
        for account in members:
            s, f = hunt(accounts, key, account, args.concurrency, args.latency, f"par-{account}")
            per_account, found_per = per_account + s, found_per + f
        print(f"one account after another, its regions in parallel: {per_account:6.1f} s, {found_per} instances found"
              f" -> {per_account / seconds:.1f}x")
        floor = (calls + lookups) * args.latency / args.concurrency
        print(f"latency floor at {args.concurrency} calls at once: {floor:.1f} s ((calls + lookups) x latency / concurrency); "
              f"the rest is CPU: irbot's botocore, the proxy and moto, on this machine's {os.cpu_count()} cores")
    finally:
        proxy.kill()
        server.kill()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
