"""Disk analysis (/ir analyze): bytes read from S3 and time, against downloading the image whole.

    python benchmarks/disk_analysis.py [--disk-mib 1024]

A --disk-mib image with an MBR partition holding the tests' planted 64 MiB ext4 filesystem (standins/disk_images.py,
needs mkfs.ext4), stored in moto's in-process S3, analysed through S3File with three block sizes. The seconds
are moto's more than irbot's: moto slices each range out of the whole object in memory, and the first analysis
also pays for importing dissect's plugins (about 2 s). The bytes are what holds on AWS too.
Not a test (and work in progress for issue 17: the next session makes it part of the README).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disk-mib", type=int, default=1024)
    args = parser.parse_args()
    # An in-process S3 of moto's: never a real account, whatever the environment says.
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import boto3
    from moto import mock_aws

    from actions.analysis import analyse, open_image
    from actions.s3_file import S3File
    from standins import disk_images

    workdir = tempfile.TemporaryDirectory(prefix="irbot-analysis-")
    disk = disk_images.build_disk(Path(workdir.name), planted=True, disk_bytes=args.disk_mib << 20)
    incident = datetime.fromtimestamp(disk_images.INCIDENT, timezone.utc)
    window = (incident - timedelta(days=1), incident + timedelta(days=1))
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="bench-evidence")
        s3.upload_file(str(disk), "bench-evidence", "disk.raw")
        for block in (1 << 20, 256 << 10, 64 << 10):
            start = time.monotonic()
            image = S3File(s3, "bench-evidence", "disk.raw", block_size=block, blocks_kept=max(64, (64 << 20) // block))
            found = analyse(open_image(image), window=window).findings
            print(f"{block >> 10:5} KiB blocks: {len(found)} findings; {image.bytes_fetched:,} bytes read "
                  f"({100 * image.bytes_fetched / image.size:.2f}% of {image.size:,}) in {image.requests} GETs; "
                  f"{time.monotonic() - start:.1f} s")
        start = time.monotonic()
        whole = len(s3.get_object(Bucket="bench-evidence", Key="disk.raw")["Body"].read())
        print(f"downloading it whole: {whole:,} bytes in {time.monotonic() - start:.1f} s")
    workdir.cleanup()


if __name__ == "__main__":
    main()
