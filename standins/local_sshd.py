"""A throwaway OpenSSH server on loopback with generated keys, for the demo's memory scene and the tests.

It listens on 127.0.0.1, .2 and .3; known_hosts names the first two only."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_sshd() -> str | None:
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


class SshServer:
    def __init__(self, workdir: Path, sshd: str, *, rekey_limit: str | None = "16M"):
        self.dir = workdir
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = workdir / "host_ed25519"
        _keygen("ed25519", self.host_key)
        # One client key of each kind irbot must accept.
        self.client_keys = {kind: workdir / f"client_{kind}" for kind in ("ed25519", "ecdsa", "rsa")}
        for kind, path in self.client_keys.items():
            _keygen(kind, path)
        (workdir / "authorized_keys").write_text("".join(p.with_suffix(".pub").read_text() for p in self.client_keys.values()))
        self.log = workdir / "sshd.log"
        config = workdir / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", "ListenAddress 127.0.0.2", "ListenAddress 127.0.0.3", f"HostKey {self.host_key}", f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {workdir / 'authorized_keys'}", "StrictModes no", "UsePAM no", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
            f"RekeyLimit {rekey_limit}" if rekey_limit else "", "LogLevel DEBUG1", "MaxStartups 50", "MaxSessions 50", "",
        ]))
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("sshd did not start: " + self.log.read_text())
                time.sleep(0.1)
        self.known_hosts = workdir / "known_hosts"
        # 127.0.0.1 and .2 are known; .3 is the same server under a name irbot was never told about.
        kind, blob = self.host_key.with_suffix(".pub").read_text().split(" ")[:2]
        self.known_hosts.write_text("".join(f"[127.0.0.{n}]:{self.port} {kind} {blob}\n" for n in (1, 2)))

    def target(self, address: str = "127.0.0.1") -> str:
        return f"{self.user}@{address}:{self.port}"

    def rekeys(self) -> int:
        return self.log.read_text(errors="replace").count("rekeying out")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _keygen(kind: str, path: Path) -> None:
    bits = ["-b", "3072"] if kind == "rsa" else []
    subprocess.run([shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-f", str(path)], check=True)
