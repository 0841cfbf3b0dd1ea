"""HTTP mode: Slack's requests at POST /slack/events and a health check, behind waitress."""

from __future__ import annotations

import json

from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from core.queues import WORKER_TTL_SECONDS, live_workers

EVENTS_PATH = "/slack/events"


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


def health_app(connection: Redis, fallback=None):
    """GET /healthz; anything else goes to ``fallback`` (Slack's requests), or 404."""

    def application(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            status, answer = health(connection)
            body = json.dumps(answer).encode()
            start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if fallback is not None:
            return fallback(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]

    return application


def wsgi_app(app: App, connection: Redis):
    return health_app(connection, SlackRequestHandler(app, path=EVENTS_PATH))


def serve(app: App, connection: Redis, port: int, host: str = "0.0.0.0") -> None:
    import waitress

    waitress.serve(wsgi_app(app, connection), host=host, port=port, threads=8, ident="irbot", clear_untrusted_proxy_headers=True)


def serve_health_in_background(connection: Redis, port: int, host: str = "0.0.0.0") -> None:
    """Socket Mode gets Slack's requests over a websocket; orchestrators still probe GET /healthz on $PORT."""
    import threading

    import waitress

    threading.Thread(target=waitress.serve, args=(health_app(connection),), daemon=True, name="healthz",
                     kwargs={"host": host, "port": port, "threads": 2, "ident": "irbot"}).start()
