"""HTTP mode: Slack's requests at POST /slack/events, a health check and Prometheus's metrics, behind waitress."""

from __future__ import annotations

import json

from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import metrics
from core.queues import WORKER_TTL_SECONDS, live_workers

EVENTS_PATH = "/slack/events"
# Slack's requests are small: a slash command is a few hundred bytes, and the biggest, a button
# press on a full message, carries that message (at most 50 blocks of 3,000 characters, URL-encoded
# JSON): well under 1 MiB. Bolt's adapter reads and decodes a whole body before it checks the
# signature, so anything bigger is refused unread (waitress checks Content-Length and chunked
# bodies against the same number).
MAX_BODY_BYTES = 1 << 20


def health(connection: Redis) -> tuple[int, dict]:
    """Whether irbot can do its work now: Redis answers and at least one worker is alive. Says which part is missing."""
    try:
        connection.ping()
        workers = live_workers(connection)
    except RedisError:
        return 503, {"status": "unavailable", "redis": "unreachable", "why": "irbot can't reach Redis (REDIS_URL)"}
    if workers == 0:
        return 503, {"status": "unavailable", "redis": "ok", "workers": 0,
                     "why": f"no irbot worker has sent a heartbeat in the last {WORKER_TTL_SECONDS} s"}
    return 200, {"status": "ok", "redis": "ok", "workers": workers}


def metrics_page(connection: Redis) -> tuple[int, bytes, str]:
    """What GET /metrics answers: the metrics, or 503 when Redis, where they all are, can't be read."""
    try:
        body, content_type = metrics.page(connection)
        return 200, body, content_type
    except RedisError as exc:
        return 503, f"irbot can't reach Redis (REDIS_URL), where its metrics are ({type(exc).__name__})\n".encode(), "text/plain"


def health_app(connection: Redis, fallback=None):
    """GET /healthz and GET /metrics, for orchestrators and Prometheus; anything else goes to ``fallback`` (Slack's requests), or 404."""

    def application(environ, start_response):
        path, method = environ.get("PATH_INFO"), environ.get("REQUEST_METHOD")
        if path == "/healthz" and method in ("GET", "HEAD"):
            status, answer = health(connection)
            return _answer(start_response, status, json.dumps(answer).encode(), "application/json")
        if path == "/metrics" and method in ("GET", "HEAD"):
            return _answer(start_response, *metrics_page(connection))
        if fallback is not None:
            return fallback(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]

    return application


def _answer(start_response, status: int, body: bytes, content_type: str) -> list[bytes]:
    start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                   [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def refuse_oversized(application, limit: int = MAX_BODY_BYTES):
    """413 for a body over ``limit`` bytes, before anything reads it."""

    def guarded(environ, start_response):
        length = environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit() or int(length) > limit:
            body = f"irbot takes request bodies of at most {limit} bytes\n".encode()
            start_response("413 Payload Too Large", [("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close")])
            return [body]
        return application(environ, start_response)

    return guarded


def wsgi_app(app: App, connection: Redis):
    return health_app(connection, refuse_oversized(SlackRequestHandler(app, path=EVENTS_PATH)))


def listen(application, port: int, host: str, threads: int, **options):
    """A waitress server bound to ``host:port`` now, in this thread, so a busy port is an OSError here
    (the caller turns it into a sentence) and not a traceback from a thread."""
    import waitress

    return waitress.create_server(application, host=host, port=port, threads=threads, ident="irbot",
                                  max_request_body_size=MAX_BODY_BYTES, **options)


def http_server(app: App, connection: Redis, port: int, host: str = "0.0.0.0"):
    """HTTP mode's server, bound; ``.run()`` serves."""
    return listen(wsgi_app(app, connection), port, host, 8, clear_untrusted_proxy_headers=True)


def serve_health_in_background(connection: Redis, port: int, host: str = "0.0.0.0") -> None:
    """Socket Mode gets Slack's requests over a websocket; orchestrators still probe GET /healthz, and Prometheus
    scrapes GET /metrics, on $PORT."""
    import threading

    server = listen(health_app(connection), port, host, 2)
    threading.Thread(target=server.run, daemon=True, name="healthz").start()
