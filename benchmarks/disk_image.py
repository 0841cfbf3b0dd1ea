"""Disk imaging (/ir image): throughput, and irbot's own CPU seconds per GB.

    .venv/bin/python benchmarks/disk_image.py [--gib 1] [--written 0.5] [--concurrency 48]

1. Against moto's server (its own process), the whole path — ListSnapshotBlocks, GetSnapshotBlock, each block's
   SHA-256 checked, the image hashed, a multipart upload to S3 and the copy from its stage — one block at a time,
   then --concurrency blocks at once. moto's server closes every connection and serves one block per call slowly,
   so these are moto's numbers more than irbot's.
   A proxy in front of it adds --latency to each call, as AWS's round trip would.
2. What holds on AWS: irbot's own CPU per GB, the CPU time of this process alone (moto and the block server run
   in others). The blocks come from a small keep-alive block server in another process (AWS keeps connections
   open; moto doesn't), the image goes to moto's S3. Broken down by running the same read with less behind it:
   fetching and checking only, then hashing the image too, then uploading it as well.
Not a test: numbers on a shared 2-core machine move by ±10%.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCK = 512 << 10


def written_blocks(gib: int, share: float) -> list[int]:
    """Evenly spread indices of the blocks a snapshot of ``gib`` GiB holds, ``share`` of them."""
    slots = (gib << 30) // BLOCK
    step = max(1, round(1 / share)) if share > 0 else slots + 1
    return list(range(0, slots, step))


# -- a keep-alive block server: GetSnapshotBlock and ListSnapshotBlocks as AWS answers them -------------------------

def serve_blocks(gib: int, share: float, ready) -> None:
    blocks = written_blocks(gib, share)
    data = [os.urandom(BLOCK) for _ in range(16)]  # blocks repeat: memory stays small, every call still sends 512 KiB
    sums = [base64.b64encode(hashlib.sha256(d).digest()).decode() for d in data]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            path = self.path.split("?")[0].split("/")
            if path[-1] == "blocks":
                body = json.dumps({"Blocks": [{"BlockIndex": i, "BlockToken": f"t{i}"} for i in blocks], "VolumeSize": gib,
                                   "BlockSize": BLOCK}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            index = int(path[-1])
            self.send_response(200)
            self.send_header("x-amz-Checksum", sums[index % 16])
            self.send_header("x-amz-Checksum-Algorithm", "SHA256")
            self.send_header("x-amz-Data-Length", str(BLOCK))
            self.send_header("Content-Length", str(BLOCK))
            self.end_headers()
            self.wfile.write(data[index % 16])

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ready.put(server.server_port)
    server.serve_forever()


def start_block_server(gib: int, share: float) -> tuple[str, object]:
    import multiprocessing

    ready = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve_blocks, args=(gib, share, ready), daemon=True)
    process.start()
    return f"http://127.0.0.1:{ready.get(timeout=30)}", process


def start_moto() -> tuple[str, subprocess.Popen]:
    process = subprocess.Popen([sys.executable, "-m", "standins.moto_process"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    return f"http://127.0.0.1:{int(process.stdout.readline().split()[1])}", process


def image_once(ebs, store, snapshot: str, concurrency: int, *, hash_image: bool = True, upload: bool = True) -> tuple[int, float, float]:
    """(bytes, seconds, CPU seconds of this process) for one image of ``snapshot``."""
    from actions import blocks

    digest = hashlib.sha256()
    sink = store.open_stream(f"bench/{snapshot}-{time.monotonic_ns()}.raw", part_size=64 << 20) if upload else None
    size = 0

    def write(data) -> None:
        nonlocal size
        size += len(data)
        if hash_image:
            digest.update(data)
        if sink is not None:
            sink.write(data)

    started, cpu = time.perf_counter(), time.process_time()
    blocks.read_volume(ebs, blocks.list_blocks(ebs, snapshot), write, concurrency=concurrency)
    if sink is not None:
        sink.complete(digest.hexdigest())
    return size, time.perf_counter() - started, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=int, default=1, help="the volume's size (default 1 GiB)")
    parser.add_argument("--written", type=float, default=0.5, help="the share of its blocks ever written (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=48, help="blocks fetched at once (default 48, IR_IMAGE_CONCURRENCY)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to each EBS call in part 1, as AWS's round trip (default 0.02)")
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    import boto3
    from botocore.config import Config

    from core.evidence import EvidenceStore

    moto, moto_process = start_moto()
    blocks_url, block_process = start_block_server(args.gib, args.written)
    try:
        s3 = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
        s3.create_bucket(Bucket="bench-evidence", ObjectLockEnabledForBucket=True)
        store = EvidenceStore(s3, "bench-evidence")
        pool = Config(max_pool_connections=args.concurrency + 4)
        ebs = boto3.client("ebs", endpoint_url=moto, region_name="us-east-1", config=pool)
        snapshot = ebs.start_snapshot(VolumeSize=args.gib)["SnapshotId"]
        data = os.urandom(BLOCK)
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        indices = written_blocks(args.gib, args.written)
        with __import__("concurrent.futures").futures.ThreadPoolExecutor(8) as writers:
            list(writers.map(lambda i: ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=i, BlockData=data, DataLength=BLOCK,
                                                              Checksum=checksum, ChecksumAlgorithm="SHA256"), indices))
        ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=len(indices))
        print(f"A {args.gib} GiB snapshot, {len(indices)} of its {(args.gib << 30) // BLOCK} blocks written "
              f"({len(indices) * BLOCK / 2**20:.0f} MiB), the rest zeros in the image.\n")

        from standins.aws_proxy import AwsProxy

        proxy = AwsProxy(moto, latency=args.latency).start()
        far = boto3.client("ebs", endpoint_url=proxy.url, region_name="us-east-1", config=pool)
        print(f"1. Reading the snapshot from moto's server, {args.latency * 1000:.0f} ms added to each call "
              "(each block checked, the image hashed, not uploaded):")
        rates = {}
        for concurrency in (1, args.concurrency):
            size, seconds, cpu = image_once(far, store, snapshot, concurrency, upload=False)
            rates[concurrency] = size / seconds / 1e6
            print(f"   {concurrency:>3} block(s) at once: {seconds:6.1f} s, {rates[concurrency]:6.0f} MB/s of image")
        print(f"   parallel / one at a time: {rates[args.concurrency] / rates[1]:.1f}x")
        size, seconds, cpu = image_once(ebs, store, snapshot, args.concurrency)
        print(f"   the whole path, uploaded to moto's S3 too: {seconds:6.1f} s, {size / seconds / 1e6:6.0f} MB/s (moto's S3 sets the pace)\n")

        print("2. irbot's own CPU per GB of image (blocks from a keep-alive server, the image to moto's S3):")
        fast = boto3.client("ebs", endpoint_url=blocks_url, region_name="us-east-1", config=pool)
        stages = (("fetch and check each block", dict(hash_image=False, upload=False)),
                  ("+ hash the image", dict(upload=False)),
                  ("+ upload it (parts, checksums, stage copy)", {}))
        for title, options in stages:
            size, seconds, cpu = image_once(fast, store, "snap-bench", args.concurrency, **options)
            print(f"   {title:<44} {cpu / (size / 1e9):5.2f} CPU s/GB -> {size / 1e6 / cpu:6.0f} MB/s on one core; "
                  f"{size / seconds / 1e6:6.0f} MB/s here")
        sha = hashlib.sha256()
        buffer, cpu = bytes(64 << 20), time.process_time()
        for _ in range(16):
            sha.update(buffer)
        print(f"   (one SHA-256 pass here: {(1 << 30) / (time.process_time() - cpu) / 1e6:.0f} MB/s)")
    finally:
        moto_process.stdin.close()
        block_process.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
