"""analysis: what an attacker left on a disk image, read with dissect.target, without writing to the image.

The image arrives as a seekable file (actions/s3_file.S3File over the evidence object, or a local file):
dissect finds the partition table, if any, and the filesystems on it, and picks the operating system.
The checks then read the handful of files where persistence and hands-on-keyboard activity show up
(passwd, crontabs, systemd units, authorized_keys, shell histories) and the metadata of the temporary
directories and /etc, so only a few megabytes of a many-gigabyte image are ever read.

Each finding names the file it came from and the line (or value) that made it one, so a responder can
check it by hand on the image.
"""

from __future__ import annotations

import itertools
import re
import stat
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import BinaryIO, Iterator

from actions.errors import ActionError
from actions.s3_file import EvidenceReadError

LUKS_MAGIC = b"LUKS\xba\xbe"
SEVERITIES = ("high", "medium", "low", "info")  # worst first: the card's order
TEMP_DIRECTORIES = ("/tmp", "/var/tmp", "/dev/shm")
# A walk of a directory stops after this many entries: a /tmp holding millions of files must not read the whole image.
WALK_LIMIT = 20_000
# The disk is the attacker's: every read is bounded. A file is read up to READ_LIMIT (a sparse 1 TiB crontab costs
# nothing to make), a line is matched on its first LINE_LIMIT characters (some patterns backtrack), at most HOME_LIMIT
# home directories are looked into, and at most MAGIC_LIMIT files have their first bytes read.
READ_LIMIT = 4 << 20
LINE_LIMIT = 4096
HOME_LIMIT = 500
MAGIC_LIMIT = 500

# A command that runs something kept in a world-writable directory (where attackers stage tools)...
RUNS_FROM_TEMP = re.compile(r"(^|[\s'\"=;|&(])(/tmp|/var/tmp|/dev/shm)/")
# ...or fetches from the network: a download tool, or a URL handed to a shell or interpreter.
FETCHES = re.compile(r"\b(curl|wget|tftp|fetch)\b|https?://|\b/dev/tcp/")
PIPED_TO_SHELL = re.compile(r"\|\s*(sudo\s+)?(ba|da|z|k)?sh\b|\|\s*python[0-9.]*\b|\|\s*perl\b")
DECODES = re.compile(r"\bbase64\s+(-d|--decode|-D)\b|\bbase64\s+-\w*d")
MAKES_EXECUTABLE = re.compile(r"\bchmod\s+(\S{0,64}\+\S{0,64}x|[0-7]{0,4}[1357][0-7]{0,2}\b|7[0-7]{2}\b)")
RUNS_LOCAL = re.compile(r"(^|[;&|]\s*)\./\S+")
HIDES_TRACKS = re.compile(r"\bhistory\s+-c\b|\bunset\s+HISTFILE\b|HISTFILE=/dev/null|\bshred\b[^\n]{0,200}history")
HISTORY_FILES = (".bash_history", ".zsh_history", ".sh_history", ".ash_history", ".history")
UNIT_DIRECTORIES = ("/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")
CRON_FILES = ("/etc/crontab", "/etc/anacrontab")
CRON_DIRECTORIES = ("/etc/cron.d", "/var/spool/cron", "/var/spool/cron/crontabs", "/etc/cron.hourly", "/etc/cron.daily",
                    "/etc/cron.weekly", "/etc/cron.monthly")


@dataclass(frozen=True)
class Finding:
    kind: str  # uid0_account, new_account, cron, systemd_unit, authorized_key, shell_history, temp_executable, etc_changed
    path: str  # the file in the image where it was found
    value: str  # the line or value that made it a finding
    severity: str  # one of SEVERITIES
    line: int | None = None  # 1-based line number in ``path``, where it came from a line
    modified: str | None = None  # the file's modification time (ISO 8601, UTC), for the timeline

    def record(self) -> dict:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class Analysis:
    os: str
    hostname: str | None
    version: str | None
    findings: list[Finding]

    def worst_first(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITIES.index(f.severity), f.kind, f.path, f.line or 0))


def open_image(fh: BinaryIO):
    """A dissect Target over the raw disk image ``fh`` (partitioned or a bare filesystem); ActionError when it holds nothing readable."""
    from dissect.target import Target, volume
    from dissect.target.containers.raw import RawContainer

    target = Target()
    # RawContainer, not dissect's container detection: the evidence is always a raw image (actions/image.py), and
    # detection would try VMDK, VHD and the like on it for nothing.
    target.disks.add(RawContainer(fh))
    try:
        target.apply()
    except EvidenceReadError:
        raise
    except Exception as exc:  # dissect raises many kinds; what matters is that there was nothing it could read
        if any(_is_encrypted(volume, v) for v in target.volumes):
            raise ActionError("The image holds an encrypted volume (e.g. LUKS) and irbot has no key for it: "
                              "analyse it on a workstation with the key (`/ir workstation`).") from exc
        raise ActionError("dissect found no filesystem it recognises on the image (it reads ext2/3/4, XFS, NTFS, FAT and more): "
                          "check that the snapshot is of a data or root volume, or analyse it on a workstation.") from exc
    if not len(target.filesystems):
        encrypted = any(_is_encrypted(volume, v) for v in target.volumes)
        raise ActionError("The image holds an encrypted volume (e.g. LUKS) and irbot has no key for it: analyse it on a workstation "
                          "with the key (`/ir workstation`)." if encrypted else
                          "dissect found no filesystem it recognises on the image: it may be blank, or of a filesystem dissect "
                          "does not read; analyse it on a workstation (`/ir workstation`).")
    return target


def _is_encrypted(volume_module, vol) -> bool:
    """dissect's answer, or a LUKS header where the volume starts: dissect knows LUKS only with dissect.fve, which
    irbot doesn't install (it can't open one without the key anyway)."""
    try:
        if volume_module.is_encrypted(vol):
            return True
    except Exception:
        pass
    try:
        vol.seek(0)
        return vol.read(len(LUKS_MAGIC)) == LUKS_MAGIC
    except Exception:
        return False


def analyse(target, *, window: tuple[datetime, datetime] | None = None) -> Analysis:
    """The findings on ``target``; files in /etc modified or changed within ``window`` (UTC) are findings too."""
    root = target.fs
    findings: list[Finding] = []
    accounts = list(_passwd(root))
    findings += _uid0_accounts(root, accounts)
    if window:
        findings += _new_accounts(root, window)
    findings += _cron(root)
    findings += _systemd_units(root)
    homes = sorted({home for *_, home in accounts if home and home != "/"} | {"/root"})[:HOME_LIMIT]
    findings += _authorized_keys(root, homes)
    findings += _shell_history(root, homes)
    findings += _temp_executables(root)
    if window:
        findings += _etc_changed(root, window)
    return Analysis(os=_safe(lambda: target.os) or "unknown", hostname=_safe(lambda: target.hostname),
                    version=_safe(lambda: target.version), findings=findings)


# -- the checks ------------------------------------------------------------------------------


def _passwd(root) -> Iterator[tuple[int, str, str, str, str]]:
    """(line number, line, name, uid, home) of each account in /etc/passwd."""
    for number, line in _lines(root, "/etc/passwd"):
        fields = line.split(":")
        if len(fields) >= 7:
            yield number, line, fields[0], fields[2], fields[5]


def _uid0_accounts(root, accounts) -> list[Finding]:
    when = _modified(root, "/etc/passwd")
    return [Finding("uid0_account", "/etc/passwd", line, "high", number, when)
            for number, line, name, uid, _ in accounts if uid.strip() == "0" and name != "root"]


def _new_accounts(root, window: tuple[datetime, datetime]) -> list[Finding]:
    """Accounts whose password was last set within ``window``: /etc/shadow's third field, in days since 1970, is set
    when an account is made (useradd) and at each password change; a day is all it says."""
    first, last = (int(moment.timestamp() // 86400) for moment in window)
    found = []
    for number, line in _lines(root, "/etc/shadow"):
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].strip().isdigit() and first <= int(fields[2]) <= last:
            day = datetime.fromtimestamp(int(fields[2]) * 86400, timezone.utc).date().isoformat()
            # Only the name and the day: the hash is a secret and never leaves the image.
            found.append(Finding("new_account", "/etc/shadow", f"{fields[0]}: password set {day}", "medium", number,
                                 _modified(root, "/etc/shadow")))
    return found


def _cron(root) -> list[Finding]:
    paths = [p for p in CRON_FILES if _safe(root.path(p).is_file)]
    paths += [str(entry) for directory in CRON_DIRECTORIES for entry in _files(root, directory, recursive=False)]
    found = []
    for path in paths:
        for number, line in _lines(root, path):
            if line.lstrip().startswith("#") or not _suspicious_command(line):
                continue
            found.append(Finding("cron", path, line.strip(), "high", number, _modified(root, path)))
    return found


def _systemd_units(root) -> list[Finding]:
    found = []
    for directory in UNIT_DIRECTORIES:
        for unit in _files(root, directory, recursive=True):
            path = str(unit)
            for number, line in _lines(root, path):
                key, _, command = line.partition("=")
                if key.strip().startswith("Exec") and _suspicious_command(command):
                    found.append(Finding("systemd_unit", path, line.strip(), "high", number, _modified(root, path)))
    return found


def _authorized_keys(root, homes: list[str]) -> list[Finding]:
    found = []
    for home in homes:
        for name in ("authorized_keys", "authorized_keys2"):
            path = f"{home.rstrip('/')}/.ssh/{name}"
            for number, line in _lines(root, path):
                if line.strip() and not line.lstrip().startswith("#"):
                    # Every key is worth a look (it's a way in); which of them is the attacker's only the owner can say.
                    found.append(Finding("authorized_key", path, line.strip(), "medium", number, _modified(root, path)))
    return found


def _shell_history(root, homes: list[str]) -> list[Finding]:
    found = []
    for home in homes:
        for name in HISTORY_FILES:
            path = f"{home.rstrip('/')}/{name}"
            for number, line in _lines(root, path):
                severity = _history_severity(line)
                if severity:
                    found.append(Finding("shell_history", path, line.strip(), severity, number, _modified(root, path)))
    return found


def _history_severity(line: str) -> str | None:
    if (FETCHES.search(line) or DECODES.search(line)) and PIPED_TO_SHELL.search(line):
        return "high"  # fetched or decoded straight into an interpreter
    if FETCHES.search(line) or DECODES.search(line) or MAKES_EXECUTABLE.search(line) or HIDES_TRACKS.search(line):
        return "medium"
    if RUNS_LOCAL.search(line) or RUNS_FROM_TEMP.search(line):
        return "medium"
    return None


def _temp_executables(root) -> list[Finding]:
    found = []
    looked = 0
    for directory in TEMP_DIRECTORIES:
        for entry in _files(root, directory, recursive=True):
            mode = _safe(lambda: entry.lstat().st_mode)
            if mode is None:
                continue
            # The mode bits are in the inode, already read; the ELF check reads 4 bytes (one range read each), only of
            # files not marked executable, and of MAGIC_LIMIT of them at most.
            elf = False
            if not mode & 0o111 and looked < MAGIC_LIMIT:
                looked += 1
                elf = _starts_with(entry, b"\x7fELF")
            if mode & 0o111 or elf:
                found.append(Finding("temp_executable", str(entry), stat.filemode(mode), "high", None, _modified(root, str(entry))))
    return found


def _etc_changed(root, window: tuple[datetime, datetime]) -> list[Finding]:
    start, end = (moment.timestamp() for moment in window)
    found = []
    for entry in _files(root, "/etc", recursive=True):
        info = _safe(entry.lstat)
        if info is None:
            continue
        # By mtime: a package installed or updated keeps its files' old mtimes and gets a new ctime, so ctime in the
        # window would name every file of every update. ctime is shown beside it: set back by touch, mtime leaves
        # ctime where the kernel's clock put it.
        if start <= info.st_mtime <= end:
            found.append(Finding("etc_changed", str(entry), f"modified {_iso(info.st_mtime)} (inode changed {_iso(info.st_ctime)})",
                                 "low", None, _iso(info.st_mtime)))
    return found


# -- reading the image -------------------------------------------------------------------------


def _suspicious_command(command: str) -> bool:
    return bool(RUNS_FROM_TEMP.search(command) or FETCHES.search(command) or DECODES.search(command))


def _files(root, directory: str, *, recursive: bool) -> Iterator:
    """Regular files under ``directory``, without following symbolic links (a link loop can't hang the walk)."""
    start = root.path(directory)
    if not _safe(start.is_dir):
        return
    pending, seen = [start], 0
    while pending:
        directory_path = pending.pop()
        # Taken lazily, at most what is left of the walk's allowance, then sorted: a directory of millions of entries
        # is never listed whole.
        entries = _safe(lambda: sorted(itertools.islice(directory_path.iterdir(), WALK_LIMIT - seen + 1))) or []
        for entry in entries:
            seen += 1
            if seen > WALK_LIMIT:
                return
            if _safe(entry.is_symlink):
                continue
            if _safe(entry.is_dir):
                if recursive:
                    pending.append(entry)
            elif _safe(entry.is_file):
                yield entry


def _lines(root, path: str) -> Iterator[tuple[int, str]]:
    """The file's lines, from its first READ_LIMIT bytes, each cut to LINE_LIMIT characters; none for a symbolic link."""
    target_path = root.path(path)
    if _safe(target_path.is_symlink) or not _safe(target_path.is_file):
        return

    def head() -> bytes:
        with target_path.open("rb") as fh:
            return fh.read(READ_LIMIT)

    text = (_safe(head) or b"").decode("utf-8", "replace")
    for number, line in enumerate(text.splitlines(), start=1):
        yield number, line[:LINE_LIMIT]


def _starts_with(entry, magic: bytes) -> bool:
    def head() -> bytes:
        with entry.open("rb") as fh:
            return fh.read(len(magic))

    return _safe(head) == magic


def _modified(root, path: str) -> str | None:
    moment = _safe(lambda: root.path(path).lstat().st_mtime)
    return _iso(moment) if moment is not None else None


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat()


def _safe(read):
    """``read()``, or None when the image's structures are damaged there: one bad inode must not end the analysis. But
    evidence that couldn't be read is no finding of nothing: that ends it, said as it is."""
    try:
        return read()
    except EvidenceReadError:
        raise
    except Exception:
        return None
