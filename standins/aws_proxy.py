"""A stand-in for AWS refusing calls: an HTTP proxy in front of moto's server that answers some calls
with the errors AWS sends — throttling when an account is over its request rate, or any other code.

moto never throttles or denies, so a test points AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_<SERVICE>)
here and tells the proxy what to refuse:

- ``storm(seconds, share, tries)``: for ``seconds``, a ``share`` of calls is refused on its first
  ``tries`` attempts (a call is one botocore invocation: its retries carry the same
  ``amz-sdk-invocation-id``). Many calls throttled, none beyond the retries a client makes.
- ``block(operation, seconds, after=n, containing=b"...")``: every attempt of one operation (whose
  body holds ``containing``) is refused for ``seconds``, starting after its first ``n`` such calls
  passed — throttling that outlasts any client's retries.
- ``refuse(operation, code, status, times)``: the next ``times`` attempts of one operation get
  AWS's error ``code`` (access denied, say) with HTTP ``status``.
- ``corrupt(operation, times)``: the next ``times`` answers to one operation (e.g. ``GET /snapshots/snap-…/blocks/3``,
  an EBS direct read) reach the client with one byte of their body changed, as a bad disk or link would.
- ``latency``: seconds added to every call (benchmarks: a far region's round trip).

Errors are worded per protocol as AWS words them: EC2's ``RequestLimitExceeded`` (HTTP 503), S3's
``SlowDown`` (503), the query APIs' ``Throttling`` (400), the JSON APIs' ``ThrottlingException``
(400), and REST-JSON's 429.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

JSON_SERVICES = frozenset({"cloudtrail", "sqs", "logs", "ssm", "securityhub", "guardduty", "kms", "events", "organizations"})
REST_JSON_SERVICES = frozenset({"lambda", "ebs"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"})


@dataclass
class Storm:
    until: float
    share: float
    tries: int


@dataclass
class Block:
    operation: str
    until: float | None  # set when the block starts, after ``after`` calls passed
    seconds: float
    after: int
    containing: bytes
    seen: int = 0


@dataclass
class Refusal:
    operation: str
    code: str
    status: int
    left: int


@dataclass
class Tally:
    passed: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # operation → refusals
    seen: dict[str, int] = field(default_factory=dict)  # operation → attempts, refused or not


class AwsProxy:
    def __init__(self, upstream: str, *, latency: float = 0.0):
        self.upstream_url = upstream
        self.latency = latency  # seconds added to every call, as a far region's round trip adds them
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.storms: list[Storm] = []
        self.blocks: list[Block] = []
        self.refusals: list[Refusal] = []
        self.corruptions: dict[str, int] = {}  # operation → answers still to corrupt
        self.tally = Tally()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> "AwsProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def storm(self, seconds: float, *, share: float = 0.5, tries: int = 3) -> None:
        with self._lock:
            self.storms.append(Storm(time.monotonic() + seconds, share, tries))

    def block(self, operation: str, seconds: float, *, after: int = 0, containing: bytes = b"") -> None:
        with self._lock:
            self.blocks.append(Block(operation, None, seconds, after, containing))

    def refuse(self, operation: str, code: str, status: int, *, times: int = 1) -> None:
        with self._lock:
            self.refusals.append(Refusal(operation, code, status, times))

    def corrupt(self, operation: str, *, times: int = 1) -> None:
        with self._lock:
            self.corruptions[operation] = times

    def _corrupting(self, operation: str) -> bool:
        with self._lock:
            if self.corruptions.get(operation, 0) > 0:
                self.corruptions[operation] -= 1
                return True
            return False

    # -- deciding --------------------------------------------------------------------------------

    def _decide(self, operation: str, body: bytes, invocation: str, attempt: int) -> tuple[int, str] | None:
        """None to forward the call, else the HTTP status and AWS error code to answer with."""
        now = time.monotonic()
        with self._lock:
            self.tally.seen[operation] = self.tally.seen.get(operation, 0) + 1
            answer = self._refusal(operation, body, invocation, attempt, now)
            if answer:
                self.tally.refused[operation] = self.tally.refused.get(operation, 0) + 1
            else:
                self.tally.passed += 1
            return answer

    def _refusal(self, operation: str, body: bytes, invocation: str, attempt: int, now: float) -> tuple[int, str] | None:
        for refusal in self.refusals:
            if refusal.operation == operation and refusal.left > 0:
                refusal.left -= 1
                return refusal.status, refusal.code
        for block in self.blocks:
            if block.operation != operation or block.containing not in body:
                continue
            if block.until is None:
                block.seen += 1
                if block.seen <= block.after:
                    continue
                block.until = now + block.seconds
            if now < block.until:
                return THROTTLED
        for storm in self.storms:
            if now < storm.until and attempt <= storm.tries and _share_of(invocation) < storm.share:
                return THROTTLED
        return None

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out apart: Nagle and delayed ACKs would add 40 ms a call

            def log_message(self, *args):
                pass

            def _any(self):
                body = _read_body(self)
                if proxy.latency:
                    time.sleep(proxy.latency)
                service = _service(self.headers.get("Authorization", ""))
                operation = _operation(service, self.command, self.path, self.headers, body)
                invocation = self.headers.get("amz-sdk-invocation-id") or uuid.uuid4().hex
                attempt = int(re.search(r"attempt=(\d+)", self.headers.get("amz-sdk-request", "attempt=1")).group(1))
                answer = proxy._decide(operation, body, invocation, attempt)
                if answer:
                    self._refuse(service, *answer)
                else:
                    self._forward(body, corrupt=proxy._corrupting(operation))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

            def _refuse(self, service: str, status: int, code: str) -> None:
                status, content_type, body, extra = _error(service, status, code)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self, body: bytes, *, corrupt: bool = False) -> None:
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                upstream.connect()
                upstream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"}
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                if response.getheader("Content-Length") is None or corrupt:
                    data = response.read()  # moto sends lengths; this is a safety net for a response without one
                    if corrupt and data:
                        middle = len(data) // 2
                        data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.send_header("Content-Length", response.getheader("Content-Length"))
                    self.end_headers()
                    while chunk := response.read(1 << 20):
                        self.wfile.write(chunk)
                upstream.close()

        return Handler


def _share_of(invocation: str) -> float:
    """Where a call falls in [0, 1): the same for all of its retries."""
    return int(hashlib.sha256(invocation.encode()).hexdigest()[:8], 16) / 0x1_0000_0000


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _service(authorization: str) -> str:
    found = re.search(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request", authorization)
    return found.group(1) if found else "s3"


def _operation(service: str, method: str, path: str, headers, body: bytes) -> str:
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if method == "POST" and (body.startswith(b"Action=") or b"&Action=" in body[:4096]):
        return parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
    return f"{method} {urlsplit(path).path}"


THROTTLED = (0, "")  # the service's own throttling answer


def _error(service: str, status: int, code: str) -> tuple[int, str, bytes, dict]:
    """AWS's error document for ``code`` in ``service``'s protocol; THROTTLED picks the service's throttling answer."""
    if (status, code) == THROTTLED:
        status, code = {"ec2": (503, "RequestLimitExceeded"), "s3": (503, "SlowDown")}.get(
            service, (429, "ThrottlingException") if service in REST_JSON_SERVICES else
            (400, "ThrottlingException") if service in JSON_SERVICES else (400, "Throttling"))
    message = {"RequestLimitExceeded": "Request limit exceeded.", "SlowDown": "Please reduce your request rate."}.get(
        code, "Rate exceeded" if "Throttl" in code else "injected by the test")
    request_id = str(uuid.uuid4())
    if service == "ec2":
        return status, "text/xml", (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                                    f"<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>").encode(), {}
    if service == "s3":
        return status, "application/xml", f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>{request_id}</RequestId></Error>".encode(), {}
    if service in REST_JSON_SERVICES:
        return status, "application/json", json.dumps({"message": message}).encode(), {"x-amzn-ErrorType": code}
    if service in JSON_SERVICES:
        return status, "application/x-amz-json-1.1", json.dumps({"__type": code, "message": message}).encode(), {}
    return status, "text/xml", (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode(), {}
