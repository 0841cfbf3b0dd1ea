"""A snapshot's blocks through the EBS direct APIs, in order, as the bytes of its raw volume.

ListSnapshotBlocks names the blocks that were ever written; GetSnapshotBlock returns one with the SHA-256
AWS computed of it. A block never written reads as zeros on a volume made from the snapshot, so the raw
image holds zeros there: the image's SHA-256 is then what `sha256sum /dev/nvme1n1` prints on such a
volume. Blocks are fetched many at once and handed on strictly in order, with at most a window of them
held in memory; each is checked against its SHA-256 (retried, then the read fails).

The block size is the length of the data received, not the BlockSize the listing reports: AWS says
524288 and sends 524288 bytes, but moto's server says 512 whatever its blocks hold. What arrives is
what gets written, so that is what is trusted (and every block must have the same length).
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from botocore.exceptions import BotoCoreError

from actions.aws import call
from actions.errors import ActionError

AWS_BLOCK_SIZE = 512 << 10  # what EBS snapshots are made of; the zeros of a snapshot without any block
GET_BLOCK_RATE = 1000  # GetSnapshotBlock calls a second per snapshot that AWS allows
ZEROS = bytes(8 << 20)  # handed on a slice at a time: gaps cost no allocation
FETCH_ATTEMPTS = 3  # a block whose data doesn't match its SHA-256 this many times fails the image
# A block still missing after this long fails the image: the writer waits for blocks in order, so one hung call would
# hold every image of the request (each call has its own read timeout and retries too: see image.EBS_CLIENT).
BLOCK_DEADLINE_SECONDS = 300
PERMISSIONS = ("ebs:ListSnapshotBlocks", "ebs:GetSnapshotBlock")


@dataclass(frozen=True)
class BlockList:
    snapshot_id: str
    volume_bytes: int
    tokens: dict[int, str]  # block index → token (tokens last 7 days)


def list_blocks(ebs, snapshot_id: str) -> BlockList:
    """Every written block of ``snapshot_id``, across the listing's pages."""
    tokens: dict[int, str] = {}
    params: dict = {"SnapshotId": snapshot_id, "MaxResults": 10000}
    volume_gib = 0
    while True:
        page = call(ebs, "list_snapshot_blocks", **params)
        volume_gib = int(page.get("VolumeSize") or volume_gib)
        tokens.update((int(b["BlockIndex"]), b["BlockToken"]) for b in page.get("Blocks", []))
        if not page.get("NextToken"):
            return BlockList(snapshot_id, volume_gib << 30, tokens)
        params["NextToken"] = page["NextToken"]


class RateLimit:
    """At most ``per_second`` starts a second across the threads that share it."""

    def __init__(self, per_second: float):
        self.interval = 1.0 / per_second
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


def fetch_block(ebs, snapshot_id: str, index: int, token: str, limit: RateLimit | None = None) -> bytes:
    """One block's data, checked against the SHA-256 AWS sent with it."""
    problem = ""
    for _ in range(FETCH_ATTEMPTS):
        if limit is not None:
            limit.wait()
        answer = call(ebs, "get_snapshot_block", SnapshotId=snapshot_id, BlockIndex=index, BlockToken=token)
        try:
            data = answer["BlockData"].read()
        except BotoCoreError as exc:  # the connection dropped mid-block: try again
            problem = f"its data stopped arriving ({type(exc).__name__})"
            continue
        algorithm = answer.get("ChecksumAlgorithm") or "SHA256"
        if algorithm != "SHA256":
            raise ActionError(f"block {index} of {snapshot_id} came with a {algorithm} checksum, which irbot can't check: the image was not kept.")
        if not answer.get("Checksum"):
            problem = "it came without the SHA-256 AWS sends with every block"
            continue
        if base64.b64encode(hashlib.sha256(data).digest()).decode() == answer["Checksum"]:
            return data
        problem = "its data did not match the SHA-256 AWS sent with it"
    raise ActionError(f"block {index} of {snapshot_id}: {problem}, {FETCH_ATTEMPTS} times; the image was not kept.")


@dataclass
class ReadStats:
    block_size: int = AWS_BLOCK_SIZE
    blocks_read: int = 0
    bytes: int = 0


def read_volume(ebs, blocks: BlockList, write: Callable[[memoryview | bytes], None], *, concurrency: int = 48,
                rate: float = GET_BLOCK_RATE) -> ReadStats:
    """Hand ``write`` the whole raw volume of ``blocks.snapshot_id`` in order: written blocks as fetched, zeros between."""
    stats = ReadStats()
    indices = sorted(blocks.tokens)
    limit = RateLimit(rate)
    window = 2 * concurrency  # fetched or being fetched, not yet written: at most this many blocks in memory
    position = 0  # the next block slot to write
    # Not a `with` block: on a failure the image ends now, without waiting for the fetches still in flight.
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"blocks-{blocks.snapshot_id}")
    waiting: deque = deque()
    upcoming = iter(indices)

    def refill() -> None:
        while len(waiting) < window:
            index = next(upcoming, None)
            if index is None:
                return
            waiting.append((index, pool.submit(fetch_block, ebs, blocks.snapshot_id, index, blocks.tokens[index], limit)))

    try:
        refill()
        while waiting:
            index, future = waiting.popleft()
            data = future.result(timeout=BLOCK_DEADLINE_SECONDS)
            refill()
            if stats.blocks_read == 0:
                stats.block_size = _block_size(blocks, data, indices[-1])
            elif len(data) != stats.block_size:
                raise ActionError(f"block {index} of {blocks.snapshot_id} holds {len(data)} bytes where the others hold {stats.block_size}: "
                                  "the image was not kept.")
            _zeros(write, (index - position) * stats.block_size, stats)
            write(data)
            stats.bytes += len(data)
            stats.blocks_read += 1
            position = index + 1
    except TimeoutError as exc:
        pool.shutdown(wait=False, cancel_futures=True)
        raise ActionError(f"block {index} of {blocks.snapshot_id} did not arrive within {BLOCK_DEADLINE_SECONDS} s: the image was not kept.") from exc
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=False)
    _zeros(write, blocks.volume_bytes - position * stats.block_size, stats)
    return stats


def _block_size(blocks: BlockList, first: bytes, last_index: int) -> int:
    size = len(first)
    if size == 0 or blocks.volume_bytes % size:
        raise ActionError(f"{blocks.snapshot_id}'s blocks hold {size} bytes, which doesn't divide its {blocks.volume_bytes >> 30} GiB: "
                          "the image was not kept.")
    if (last_index + 1) * size > blocks.volume_bytes:
        raise ActionError(f"{blocks.snapshot_id} lists block {last_index}, beyond the end of its {blocks.volume_bytes >> 30} GiB volume: "
                          "the image was not kept.")
    return size


def _zeros(write, count: int, stats: ReadStats) -> None:
    view = memoryview(ZEROS)
    while count > 0:
        piece = min(count, len(ZEROS))
        write(view[:piece])
        stats.bytes += piece
        count -= piece
