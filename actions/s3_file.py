"""A read-only, seekable file over one version of an S3 object, read through range GETs.

Disk analysis reads a few megabytes scattered across an image of many gigabytes (superblocks, inode
tables, directories, a handful of files), so the image is read in place rather than downloaded. Reads
are rounded out to fixed blocks and the most recent blocks are kept, because filesystem code reads the
same metadata blocks over and over in small pieces. Pinning the version means an image replaced under
the same key can't change what one analysis reads halfway through.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from botocore.exceptions import BotoCoreError

from actions.aws import call
from actions.errors import ActionError

BLOCK_SIZE = 1 << 20
BLOCKS_KEPT = 64  # 64 MiB of cache at most per open image
PERMISSIONS = ("s3:GetObject", "s3:GetObjectVersion")


class EvidenceReadError(ActionError):
    """The evidence itself could not be read (S3 refused, or answered short): an analysis must fail, never find nothing."""


class S3File(io.RawIOBase):
    """``bucket``/``key`` (at ``version_id`` when given) as a file; ``bytes_fetched`` counts what came from S3."""

    def __init__(self, s3, bucket: str, key: str, *, version_id: str | None = None, size: int | None = None,
                 block_size: int = BLOCK_SIZE, blocks_kept: int = BLOCKS_KEPT):
        super().__init__()
        self.s3, self.bucket, self.key = s3, bucket, key
        self.block_size, self.blocks_kept = block_size, blocks_kept
        if size is None or version_id is None:
            head = call(s3, "head_object", Bucket=bucket, Key=key, **({"VersionId": version_id} if version_id else {}))
            size = int(head["ContentLength"])
            # The version read at open is the one every later range reads, even if the key gets a newer one.
            version_id = version_id or head.get("VersionId")
        self.version_id = version_id  # "null" too: the version of a key written before versioning, asked for by that name
        self.size = size
        self.position = 0
        self.bytes_fetched = 0
        self.requests = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()  # dissect may read one target from several threads

    # -- io.RawIOBase -----------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self.position + offset
        elif whence == io.SEEK_END:
            position = self.size + offset
        else:
            raise ValueError(f"whence {whence} is not one of SEEK_SET, SEEK_CUR, SEEK_END")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self.position = position
        return position

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.position
        data = self.pread(self.position, size)
        self.position += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    # -- reading ---------------------------------------------------------------------------

    def pread(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` (fewer at the end of the object), without moving the position."""
        end = min(offset + max(size, 0), self.size)
        if offset >= end:
            return b""
        first, last = offset // self.block_size, (end - 1) // self.block_size
        with self._lock:
            found = {index: self._use(index) for index in range(first, last + 1) if index in self._blocks}
            # Taken from what was fetched, not the cache: a read longer than the cache evicts its own first blocks.
            found.update(self._fetch_runs([index for index in range(first, last + 1) if index not in found]))
            pieces = [found[index] for index in range(first, last + 1)]
        joined = b"".join(pieces) if len(pieces) > 1 else pieces[0]
        start = offset - first * self.block_size
        return joined[start: start + (end - offset)]

    def _use(self, index: int) -> bytes:
        self._blocks.move_to_end(index)
        return self._blocks[index]

    def _fetch_runs(self, missing: list[int]) -> dict[int, bytes]:
        # Neighbouring missing blocks come in one request: a large sequential read costs one GET, not one per block.
        fetched: dict[int, bytes] = {}
        run: list[int] = []
        for index in missing:
            if run and index != run[-1] + 1:
                fetched.update(self._fetch(run))
                run = []
            run.append(index)
        if run:
            fetched.update(self._fetch(run))
        return fetched

    def _fetch(self, run: list[int]) -> dict[int, bytes]:
        start = run[0] * self.block_size
        end = min((run[-1] + 1) * self.block_size, self.size) - 1
        params = {"Bucket": self.bucket, "Key": self.key, "Range": f"bytes={start}-{end}"}
        if self.version_id:
            params["VersionId"] = self.version_id
        try:
            body = call(self.s3, "get_object", **params)["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except (ActionError, BotoCoreError) as exc:
            raise EvidenceReadError(f"reading s3://{self.bucket}/{self.key} failed: {exc}") from exc
        if len(data) != end - start + 1:
            raise EvidenceReadError(f"s3://{self.bucket}/{self.key} returned {len(data)} bytes for bytes {start}-{end}")
        self.requests += 1
        self.bytes_fetched += len(data)
        view = memoryview(data)
        fetched = {index: bytes(view[n * self.block_size: (n + 1) * self.block_size]) for n, index in enumerate(run)}
        for index, block in fetched.items():
            self._blocks[index] = block
            self._blocks.move_to_end(index)
        while len(self._blocks) > self.blocks_kept:
            self._blocks.popitem(last=False)
        return fetched
