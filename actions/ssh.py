"""SSH for evidence: host keys verified (never auto-accepted), one command's output streamed fast.

Measured facts behind the settings: AES-GCM is paramiko's fastest cipher here; its default
2 MiB window beats larger ones (its receive buffer shifts bytes on every read); and a rekey
paramiko starts itself near the end of a long stream can hang (paramiko issue #822), so
paramiko never starts one and OpenSSH's own RekeyLimit drives rekeying.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable

import paramiko
from paramiko.packet import Packetizer

from actions.errors import ActionError

Packetizer.REKEY_BYTES = pow(2, 62)
Packetizer.REKEY_PACKETS = pow(2, 62)

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr")
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    user: str
    label: str  # what the responder typed, for messages

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class TrustedKeys:
    """The host keys irbot accepts for one endpoint, as fingerprints, and where it learnt them."""

    fingerprints: frozenset[str]
    source: str

    def check(self, endpoint: Endpoint, key: paramiko.PKey) -> str:
        seen = fingerprint(key)
        if not self.fingerprints:
            raise ActionError(f"{endpoint.label}: irbot knows no host key for {endpoint.host} ({self.source}), so it will not connect. "
                              f"Add the host to IR_SSH_KNOWN_HOSTS.")
        if seen not in self.fingerprints:
            raise ActionError(f"{endpoint.label}: the host key {seen} ({key.get_name()}) is not the one irbot knows from {self.source}; "
                              f"refusing to connect (a different machine, or someone in the middle).")
        return f"{seen} ({key.get_name()}) matches {self.source}"


def trusted_from_known_hosts(path: str | None, host: str, port: int) -> TrustedKeys:
    if not path:
        return TrustedKeys(frozenset(), "no IR_SSH_KNOWN_HOSTS")
    try:
        known = paramiko.HostKeys(path)
    except OSError as exc:
        raise ActionError(f"IR_SSH_KNOWN_HOSTS ({path}) can't be read: {exc.strerror}.") from None
    names = [host] if port == 22 else [f"[{host}]:{port}", host]
    for name in names:
        entry = known.lookup(name)
        if entry:
            return TrustedKeys(frozenset(fingerprint(k) for k in entry.values()), "IR_SSH_KNOWN_HOSTS")
    return TrustedKeys(frozenset(), f"IR_SSH_KNOWN_HOSTS has no entry for {names[0]}")


CONSOLE_FINGERPRINTS = re.compile(r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)-----END SSH HOST KEY FINGERPRINTS-----", re.S)
CONSOLE_KEYS = re.compile(r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S)


def trusted_from_console(console: str) -> TrustedKeys:
    """The host keys an EC2 instance printed to its console at first boot (cloud-init does this)."""
    prints = set()
    for block in CONSOLE_FINGERPRINTS.findall(console):
        prints.update(re.findall(r"SHA256:[A-Za-z0-9+/]{43}", block))
    for block in CONSOLE_KEYS.findall(console):
        for line in block.strip().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                try:
                    blob = base64.b64decode(parts[1])
                except ValueError:
                    continue
                prints.add("SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="))
    return TrustedKeys(frozenset(prints), "the instance's console output" if prints else "the console output (it printed no host keys)")


def load_key(path: str) -> paramiko.PKey:
    """An ed25519, ECDSA or RSA private key, from a file."""
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ActionError(f"IR_SSH_KEY ({path}) is not a readable ed25519, ECDSA or RSA private key without a passphrase: {type(exc).__name__}.") from None


def connect(endpoint: Endpoint, key: paramiko.PKey, trusted: TrustedKeys, *, timeout: float = 15.0, sock=None) -> tuple[paramiko.Transport, str]:
    """An authenticated transport to ``endpoint`` whose host key was checked; and what was checked."""
    try:
        sock = sock or socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise ActionError(f"{endpoint.label}: can't reach {endpoint.host}:{endpoint.port} ({exc.strerror or type(exc).__name__}).") from None
    transport = paramiko.Transport(sock)
    options = transport.get_security_options()
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in options.ciphers) or options.ciphers
    try:
        transport.start_client(timeout=timeout)
        checked = trusted.check(endpoint, transport.get_remote_server_key())
        transport.auth_publickey(endpoint.user, key)
    except ActionError:
        transport.close()
        raise
    except paramiko.AuthenticationException:
        transport.close()
        raise ActionError(f"{endpoint.label}: {endpoint.user}@{endpoint.host} refused irbot's key (IR_SSH_KEY).") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise ActionError(f"{endpoint.label}: the SSH handshake with {endpoint.host}:{endpoint.port} failed ({type(exc).__name__}).") from None
    return transport, checked


def tunnel(bastion: paramiko.Transport, endpoint: Endpoint, timeout: float = 15.0):
    """A channel through the bastion to ``endpoint``, to run SSH over."""
    try:
        return bastion.open_channel("direct-tcpip", (endpoint.host, endpoint.port), ("127.0.0.1", 0), timeout=timeout)
    except (paramiko.SSHException, OSError) as exc:
        raise ActionError(f"{endpoint.label}: the bastion could not reach {endpoint.host}:{endpoint.port} ({exc}).") from None


def run(transport: paramiko.Transport, command: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """A short command's exit status, stdout and stderr."""
    out, err = bytearray(), bytearray()
    status = stream(transport, command, out.extend, stall_seconds=timeout, stderr=err)
    return status, out.decode(errors="replace"), err.decode(errors="replace")


def stream(transport: paramiko.Transport, command: str, on_data: Callable[[bytes], None], *, stall_seconds: float,
           stderr: bytearray | None = None) -> int:
    """Run ``command`` and hand its stdout to ``on_data`` as it arrives; returns the exit status.

    Raises ActionError on a stall longer than ``stall_seconds`` or a dropped connection: a stream
    that stops early is never mistaken for one that ended."""
    stderr = stderr if stderr is not None else bytearray()
    try:
        channel = transport.open_session()
        channel.settimeout(stall_seconds)
        channel.exec_command(command)
    except (paramiko.SSHException, OSError) as exc:
        raise ActionError(f"could not start the command: {type(exc).__name__}") from None
    total = 0
    try:
        while True:
            try:
                data = channel.recv(READ_SIZE)
            except socket.timeout:
                raise ActionError(f"stalled: no data for {stall_seconds:.0f} s after {total} bytes") from None
            if not data:
                break
            total += len(data)
            on_data(data)
            if channel.recv_stderr_ready():
                stderr.extend(channel.recv_stderr(65536))
                del stderr[:-8192]
        # EOF: only an exit status says the command ended rather than the connection.
        deadline = time.monotonic() + stall_seconds
        while not channel.exit_status_ready():
            if not transport.is_active() or time.monotonic() > deadline:
                raise ActionError(f"the connection dropped after {total} bytes (no exit status)")
            time.sleep(0.01)
        while channel.recv_stderr_ready():
            stderr.extend(channel.recv_stderr(65536))
        status = channel.recv_exit_status()
        if status == -1:
            raise ActionError(f"the connection dropped after {total} bytes")
        return status
    except (EOFError, OSError, paramiko.SSHException) as exc:
        # paramiko reports a connection that died under it in several ways; all mean the same here.
        raise ActionError(f"the connection dropped after {total} bytes ({type(exc).__name__})") from None
    finally:
        try:
            channel.close()
        except (EOFError, OSError, paramiko.SSHException):
            pass
