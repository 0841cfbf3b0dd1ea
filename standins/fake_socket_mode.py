"""A stand-in for Slack's Socket Mode WebSocket, the URL that apps.connections.open hands out.

In Socket Mode Slack does not POST to the app: the app opens a WebSocket, Slack greets it with
"hello", pushes each slash command or click as an envelope, and the app answers with the envelope's
ID within 3 s or Slack shows the user an error. This endpoint does the same on loopback so the tests
can drive the real `irbot serve` in Socket Mode and time its acknowledgements.

It needs the `websockets` package (the test extra); only FakeSlack with an app token loads it, so
the demo, which serves over HTTP, runs without it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Response
from websockets.sync.server import ServerConnection, serve


@dataclass
class Ack:
    envelope_id: str
    payload: dict | None  # the response payload, when the envelope accepted one and the app sent it
    seconds: float  # from sending the envelope to reading its acknowledgement


class SocketModeEndpoint:
    def __init__(self, app_id: str = "A0IRBOT"):
        self.app_id = app_id
        self.acks: dict[str, Ack] = {}
        self.unknown: list[dict] = []  # messages from the app that acknowledge no envelope we sent
        self._tickets: set[str] = set()  # one per apps.connections.open, as Slack's URLs are single-use
        self._open: list[ServerConnection] = []
        self._sent_at: dict[str, float] = {}
        self._changed = threading.Condition()
        self._server = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> "SocketModeEndpoint":
        # compression off: Slack's own endpoint does not offer it, and frames stay readable in a capture.
        self._server = serve(self._session, "127.0.0.1", 0, process_request=self._check_ticket, compression=None)
        threading.Thread(target=self._server.serve_forever, name="fake-socket-mode", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()

    def new_url(self) -> str:
        """What apps.connections.open answers: a fresh URL carrying a ticket for one connection."""
        ticket = uuid.uuid4().hex
        with self._changed:
            self._tickets.add(ticket)
        host, port = self._server.socket.getsockname()[:2]
        return f"ws://{host}:{port}/link/?ticket={ticket}"

    # -- the app's side of the socket ---------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request) -> Response | None:
        # A URL is only good once and only if apps.connections.open issued it, so a client that skips the
        # authenticated call (or replays an old URL) is refused as Slack refuses it.
        ticket = (parse_qs(urlsplit(request.path).query).get("ticket") or [""])[0]
        with self._changed:
            if ticket in self._tickets:
                self._tickets.discard(ticket)
                return None
        return connection.respond(401, "invalid ticket: open a connection with apps.connections.open\n")

    def _session(self, connection: ServerConnection) -> None:
        with self._changed:
            self._open.append(connection)
            count = len(self._open)
            self._changed.notify_all()
        try:
            # Slack's first message on every connection; clients wait for it before trusting the link.
            connection.send(json.dumps({"type": "hello", "num_connections": count,
                                        "debug_info": {"host": "fake-applink", "approximate_connection_time": 18060},
                                        "connection_info": {"app_id": self.app_id}}))
            for raw in connection:
                self._read(raw)
        except ConnectionClosed:
            pass  # the app went away, with or without a close frame: that is its choice, not a fault here
        finally:
            with self._changed:
                self._open.remove(connection)
                self._changed.notify_all()

    def _read(self, raw: str | bytes) -> None:
        received = time.monotonic()
        try:
            message = json.loads(raw)
        except ValueError:
            message = {"unreadable": raw if isinstance(raw, str) else raw.decode(errors="replace")}
        with self._changed:
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            if envelope_id in self._sent_at and envelope_id not in self.acks:
                self.acks[envelope_id] = Ack(envelope_id, message.get("payload"), received - self._sent_at[envelope_id])
            else:
                self.unknown.append(message)
            self._changed.notify_all()

    # -- Slack's side: what the tests call ------------------------------------------------

    @property
    def connections(self) -> int:
        with self._changed:
            return len(self._open)

    def wait_for_connections(self, count: int = 1, timeout: float = 30.0) -> None:
        """Block until exactly ``count`` connections are open (0: until the app has gone)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._open) == count, timeout):
                raise TimeoutError(f"{len(self._open)} Socket Mode connections open, not {count}")

    def send(self, kind: str, payload: dict, *, accepts_response_payload: bool) -> str:
        """Push one envelope (``kind``: "slash_commands", "interactive", "events_api") on the newest
        connection, as Slack picks one of the app's connections; returns its envelope ID."""
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": accepts_response_payload}
        with self._changed:
            if not self._open:
                raise ConnectionError("no app is connected over Socket Mode")
            connection = self._open[-1]
            self._sent_at[envelope_id] = time.monotonic()
        connection.send(json.dumps(envelope))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 30.0) -> Ack:
        """The app's acknowledgement of ``envelope_id``; the caller judges ``seconds`` against Slack's 3 s."""
        with self._changed:
            if not self._changed.wait_for(lambda: envelope_id in self.acks, timeout):
                raise TimeoutError(f"envelope {envelope_id} was not acknowledged within {timeout} s")
            return self.acks[envelope_id]
