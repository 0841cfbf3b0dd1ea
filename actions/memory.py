"""memory: capture one host's memory over SSH, streamed into evidence, hashed on the fly.

A capture is complete only when every byte the host announced arrived, the command exited 0,
and the sink confirms the object with its SHA-256. A stall, a dropped connection or a short
stream fails it, and the sink throws away what it had.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import boto3

from actions.artefacts import Result, json_artefact
from actions.aws import call, client
from actions.collect import decode_console_output
from actions.context import RunContext
from actions.errors import ActionError
from actions.instances import describe_instance
from actions.registry import Option, Risk, action
from actions.ssh import Endpoint, TrustedKeys, connect, load_key, run, stream, trusted_from_console, trusted_from_known_hosts, tunnel
from actions.steps import Outcome, StepLog

INSTANCE_TARGET = re.compile(r"^i-[0-9a-f]{8,17}$")
SSH_TARGET = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\s]+)(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class MemorySettings:
    key_path: str
    command: str
    size_command: str | None = None
    known_hosts: str | None = None
    user: str | None = None
    bastion: str | None = None  # user@host[:port]
    stall_seconds: float = 60.0


class Sink(Protocol):
    """Where the image goes: written in order, then completed with its digest, or aborted."""

    def write(self, data: bytes) -> None: ...
    def complete(self, sha256: str) -> dict: ...  # {"uri", "version_id", ...}
    def abort(self) -> None: ...


@dataclass
class Progress:
    done: int = 0
    expected: int | None = None
    started: float = 0.0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0


def parse_target(text: str, default_user: str | None) -> tuple[str | None, str, int, str]:
    """(instance ID or None, host, port, user) from what the responder typed."""
    if INSTANCE_TARGET.match(text):
        return text, "", 22, default_user or "ec2-user"
    match = SSH_TARGET.match(text)
    if not match:
        raise ActionError(f"`{text}` is not an instance ID or user@host[:port].")
    user = match["user"] or default_user
    if not user:
        raise ActionError(f"{text}: no SSH user: write user@{text}, or set IR_SSH_USER.")
    return None, match["host"].strip("[]"), int(match["port"] or 22), user


def resolve(session: boto3.Session, region: str, text: str, settings: MemorySettings, *, public: bool) -> tuple[Endpoint, TrustedKeys, str | None]:
    """Where to connect for ``text`` and which host keys to accept there."""
    instance_id, host, port, user = parse_target(text, settings.user)
    if instance_id is None:
        return Endpoint(host, port, user, text), trusted_from_known_hosts(settings.known_hosts, host, port), None
    ec2 = client(session, "ec2", region)
    _, instance = describe_instance(ec2, instance_id)
    host = instance.get("PublicIpAddress") if public else instance.get("PrivateIpAddress")
    if not host:
        raise ActionError(f"{instance_id} has no {'public' if public else 'private'} IP address" + ("" if public else "; try --public"))
    trusted = trusted_from_known_hosts(settings.known_hosts, host, port)
    if not trusted.fingerprints:
        console = decode_console_output(call(ec2, "get_console_output", InstanceId=instance_id).get("Output"))
        trusted = trusted_from_console(console)
    return Endpoint(host, port, user, instance_id), trusted, instance_id


@action("memory", risk=Risk.CHANGE, summary="Capture memory over SSH from one or more hosts, straight into the evidence bucket.",
        permissions=("ec2:DescribeInstances", "ec2:GetConsoleOutput"), target="memory-target", many=True,
        extra_options=(Option("--public", says="over the instances' public addresses"),), card_state="memory captured", queue="long", timeout_seconds=12 * 3600, fan_out=True,
        target_title="Capture {target}'s memory", batch_word="captures")
def capture(session: boto3.Session, target: str, region: str, *, context: RunContext, steps: StepLog, dry_run: bool = False,
            public: bool = False) -> Result:
    settings, open_sink, on_progress = context.memory, context.open_sink, context.on_progress
    if settings is None:
        raise ActionError("Memory capture is not set up: set IR_SSH_KEY (and IR_MEMORY_COMMAND) for the worker.")
    result = Result("memory", target, region)
    name = f"memory-{re.sub(r'[^A-Za-z0-9._-]', '_', target)}.lime"
    custody: dict = {"target": target, "requester": context.requester, "approvers": list(context.approvers),
                     "request": context.request_id, "incident": context.incident, "command": settings.command}
    result.facts["custody"] = custody
    try:
        endpoint, trusted, instance_id = resolve(session, region, target, settings, public=public)
    except ActionError as exc:
        steps.add("resolve", f"Find {target}", Outcome.FAILED, str(exc))
        result.steps = steps.steps
        return result
    steps.add("resolve", f"Find {target}", Outcome.DONE, f"{endpoint}, host keys from {trusted.source}")
    custody["endpoint"] = str(endpoint)
    if dry_run:
        steps.add("capture", f"Capture {target}'s memory", Outcome.PLANNED,
                  f"ssh {endpoint}, run `{settings.command}`, stream it to the evidence bucket as {name}, hashed on the way")
        result.steps = steps.steps
        return result

    key = load_key(settings.key_path)
    transport = bastion = None
    try:
        sock = None
        if settings.bastion:
            _, b_host, b_port, b_user = parse_target(settings.bastion, settings.user)
            b_end = Endpoint(b_host, b_port, b_user, f"bastion {settings.bastion}")
            bastion, _ = connect(b_end, key, trusted_from_known_hosts(settings.known_hosts, b_host, b_port))
            sock = tunnel(bastion, endpoint)
        transport, checked = connect(endpoint, key, trusted, sock=sock)
        custody["host_key"] = checked
        steps.add("host-key", f"Verify {endpoint.host}'s host key", Outcome.DONE, checked)
        expected = _expected_size(transport, settings, steps)
        custody["expected_bytes"] = expected
        _stream(transport, settings, name, expected, open_sink, on_progress, steps, custody)
    except ActionError as exc:
        failed_step = "connect" if "host-key" not in [s.name for s in steps.steps] else "capture"
        steps.add(failed_step, f"Capture {target}'s memory", Outcome.FAILED, str(exc))
    finally:
        for t in (transport, bastion):
            if t is not None:
                t.close()
    if any(s.name == "capture" and s.outcome is Outcome.DONE for s in steps.steps):
        result.artefacts.append(json_artefact(f"{name}.custody.json", f"Chain of custody of {name}", custody))
    result.steps = steps.steps
    return result


def _expected_size(transport, settings: MemorySettings, steps: StepLog) -> int | None:
    if not settings.size_command:
        steps.add("size", "Learn the image's size", Outcome.SKIPPED, "no IR_MEMORY_SIZE_COMMAND: completeness can't be checked")
        return None
    status, out, err = run(transport, settings.size_command)
    words = out.split()
    if status != 0 or not words or not words[0].isdigit():
        raise ActionError(f"the size command failed (exit {status}): {(err or out).strip()[:200]}")
    steps.add("size", "Learn the image's size", Outcome.DONE, f"{int(words[0])} bytes announced")
    return int(words[0])


def _stream(transport, settings: MemorySettings, name: str, expected: int | None, open_sink, on_progress, steps: StepLog, custody: dict) -> None:
    if open_sink is None:
        raise ActionError("no evidence store to stream into")
    sink = open_sink(name)
    digest = hashlib.sha256()
    progress = Progress(expected=expected, started=time.monotonic())
    last_report = 0.0
    custody["started_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")

    def take(data: bytes) -> None:
        nonlocal last_report
        digest.update(data)
        sink.write(data)
        progress.done += len(data)
        if on_progress and time.monotonic() - last_report > 1.0:
            last_report = time.monotonic()
            on_progress(progress)

    stderr = bytearray()
    try:
        status = stream(transport, settings.command, take, stall_seconds=settings.stall_seconds, stderr=stderr)
        if status != 0:
            raise ActionError(f"the capture command exited {status} after {progress.done} bytes: {stderr.decode(errors='replace').strip()[-200:]}")
        if expected is not None and progress.done != expected:
            raise ActionError(f"short stream: {progress.done} of {expected} bytes arrived")
        stored = sink.complete(digest.hexdigest())
    except BaseException:
        sink.abort()
        custody["ended_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        custody["bytes"] = progress.done
        if on_progress:
            on_progress(progress)
        raise
    custody.update(ended_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), bytes=progress.done,
                   sha256=digest.hexdigest(), s3=stored.get("uri"), version_id=stored.get("version_id"))
    if on_progress:
        on_progress(progress)
    checked = "all announced bytes" if expected is not None else "size unverified"
    steps.add("capture", "Capture the memory image", Outcome.DONE,
              f"{progress.done} bytes ({checked}), sha256 {digest.hexdigest()}, {progress.rate / 1e6:.0f} MB/s, to {stored.get('uri')}")
