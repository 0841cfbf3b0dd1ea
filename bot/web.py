"""HTTP mode: Slack's requests at POST /slack/events and a health check, behind waitress."""

from __future__ import annotations

import json

from redis import Redis
from redis.exceptions import RedisError
from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

EVENTS_PATH = "/slack/events"


def wsgi_app(app: App, connection: Redis):
    slack = SlackRequestHandler(app, path=EVENTS_PATH)

    def application(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") in ("GET", "HEAD"):
            try:
                redis_state = "ok" if connection.ping() else "unreachable"
            except RedisError:
                redis_state = "unreachable"
            body = json.dumps({"status": "ok", "redis": redis_state}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return slack(environ, start_response)

    return application


def serve(app: App, connection: Redis, port: int, host: str = "0.0.0.0") -> None:
    import waitress

    waitress.serve(wsgi_app(app, connection), host=host, port=port, threads=8, ident="irbot", clear_untrusted_proxy_headers=True)
