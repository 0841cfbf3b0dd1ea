"""A stand-in for Slack's Web API on loopback, for the demo and the tests.

Slack can't be reached from a test machine, so this small stdlib server answers
the Web API methods irbot calls, checks the bearer token as Slack does, and
records every call and every post to a response_url so callers can read the
channel back.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl


@dataclass
class Call:
    method: str  # Web API method, or "response_url"
    params: dict[str, Any]
    at: float = field(default_factory=time.time)


class FakeSlack:
    def __init__(self, token: str, *, app_token: str = "", team_id: str = "T0IRBOT", bot_user_id: str = "U0IRBOT",
                 scopes: tuple[str, ...] | None = None):
        self.token = token
        # The token's OAuth scopes, sent as Slack does in every answer's x-oauth-scopes header (None: no header).
        # A test sets them, e.g. to the manifest's bot scopes less one.
        self.scopes = scopes
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.calls: list[Call] = []
        self.outside_channels: set[str] = set()  # channels the bot is not a member of
        self.usergroups: dict[str, dict] = {}  # id → {"handle": ..., "users": [...]}
        self.channels: dict[str, dict] = {}  # made with conversations.create: id → {"name", "is_private", "members"}
        self.uploads: dict[str, bytes] = {}  # file ID → the bytes posted to its upload URL
        self.users: dict[str, dict] = {}  # id → a users.info "user" object, e.g. {"real_name": "Alice Example"}
        self.rate_limited: dict[str, list[int]] = {}  # method → Retry-After seconds for its next calls
        self._ts = itertools.count(1)
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.socket_mode = None  # the WebSocket apps.connections.open points at, when there is an app token

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> "FakeSlack":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw_bytes = self.rfile.read(length)
                path, _, query = self.path.partition("?")
                if path.startswith("/upload/"):
                    fake.uploads[path.rsplit("/", 1)[-1]] = raw_bytes
                    status, body, headers = 200, {"ok": True}, {}
                else:
                    raw = raw_bytes.decode("utf-8")
                    if self.headers.get("Content-Type", "").startswith("application/json"):
                        params = json.loads(raw or "{}")
                    else:
                        params = dict(parse_qsl(raw))
                    params.update(dict(parse_qsl(query)))
                    status, body, headers = fake._answer(path, params, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-slack", daemon=True).start()
        if self.app_token:
            # Imported here: only Socket Mode needs the websockets package, and the demo runs without it.
            from standins.fake_socket_mode import SocketModeEndpoint

            self.socket_mode = SocketModeEndpoint().start()
        return self

    def stop(self) -> None:
        if self.socket_mode:
            self.socket_mode.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.base + "/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base}/response/{name}"

    # -- reading what happened --------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._changed:
            return [c for c in self.calls if c.method == method]

    def messages(self, channel: str) -> list[dict]:
        """Messages the bot posted in ``channel`` (chat.postMessage), newest last."""
        return [c.params for c in self.calls_to("chat.postMessage") if c.params.get("channel") == channel]

    def top_level(self, channel: str) -> list[dict]:
        """Messages the bot posted in ``channel`` itself, not in a thread: what the channel shows."""
        return [m for m in self.messages(channel) if not m.get("thread_ts")]

    def thread(self, channel: str, ts: str) -> list[dict]:
        """Replies the bot posted in the thread of message ``ts``, each as it is now (its latest chat.update)."""
        return [self.current(channel, m["ts"]) for m in self.messages(channel) if m.get("thread_ts") == ts]

    def current(self, channel: str, ts: str) -> dict | None:
        """A message as the channel shows it now: the post, or its latest chat.update."""
        with self._changed:
            versions = [c.params for c in self.calls if c.method in ("chat.postMessage", "chat.update")
                        and c.params.get("channel") == channel and c.params.get("ts") == ts]
        return versions[-1] if versions else None

    def ephemerals(self, user: str) -> list[str]:
        """Texts shown only to ``user`` (chat.postEphemeral)."""
        return [c.params.get("text", "") for c in self.calls_to("chat.postEphemeral") if c.params.get("user") == user]

    def wait_for(self, predicate: Callable[["FakeSlack"], Any], timeout: float = 30.0):
        """Block until ``predicate(self)`` is truthy; return its value, or raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the fake Slack did not see what was expected")
                self._changed.wait(min(remaining, 0.5))

    def reset(self) -> None:
        with self._changed:
            self.calls.clear()
            self.outside_channels.clear()
            self.usergroups.clear()
            self.channels.clear()
            self.uploads.clear()
            self.users.clear()
            self.rate_limited.clear()

    # -- answering ---------------------------------------------------------------------

    def _record(self, method: str, params: dict) -> None:
        with self._changed:
            self.calls.append(Call(method, params))
            self._changed.notify_all()

    def outage(self, seconds: float, methods: tuple[str, ...] = ("chat.postMessage", "chat.update")) -> None:
        """Answer ``methods`` with HTTP 503 for ``seconds``, as during a Slack incident."""
        self.down_until, self.down_methods = time.time() + seconds, methods

    def rate_limit(self, method: str, *retry_after: int) -> None:
        """Answer the next calls of ``method`` with HTTP 429 and these Retry-After values, as Slack does."""
        self.rate_limited.setdefault(method, []).extend(retry_after)

    def _answer(self, path: str, params: dict, authorization: str) -> tuple[int, dict, dict]:
        if path.startswith("/response/"):
            self._record("response_url", params)
            return 200, {"ok": True}, {}
        if not path.startswith("/api/"):
            return 404, {"ok": False, "error": "not_found"}, {}
        method = path[len("/api/"):]
        token = params.pop("token", None) or authorization.removeprefix("Bearer ").strip()
        expected = self.app_token if method.startswith("apps.connections.") else self.token
        if not expected or token != expected:
            self._record(method + ":refused", {})
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if method in getattr(self, "down_methods", ()) and time.time() < self.down_until:
            self._record(method + ":unavailable", {})
            return 503, {"ok": False, "error": "service_unavailable"}, {}
        if self.rate_limited.get(method):
            self._record(method + ":rate-limited", {})
            return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(self.rate_limited[method].pop(0))}
        answer = getattr(self, "_" + method.replace(".", "_"), None)
        if answer is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        body = answer(params)
        if body.get("ok"):
            self._record(method, params)
        return 200, body, {} if self.scopes is None else {"x-oauth-scopes": ",".join(self.scopes)}

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    def _auth_test(self, params):
        return {"ok": True, "url": "https://irbot-test.slack.com/", "team": "irbot test", "user": "irbot",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": "B0IRBOT"}

    def _chat_postMessage(self, params):
        channel = params.get("channel", "")
        if channel in self.outside_channels:
            return {"ok": False, "error": "not_in_channel"}
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        ts = self._next_ts()
        params["ts"] = ts
        return {"ok": True, "channel": channel, "ts": ts, "message": {"text": params.get("text"), "ts": ts}}

    def _apps_connections_open(self, params):
        return {"ok": True, "url": self.socket_mode.new_url()}

    def _chat_update(self, params):
        posted = any(c.method == "chat.postMessage" and c.params.get("ts") == params.get("ts") for c in self.calls)
        if not posted:
            return {"ok": False, "error": "message_not_found"}
        return {"ok": True, "channel": params.get("channel"), "ts": params.get("ts"), "text": params.get("text")}

    def _conversations_create(self, params):
        name = params.get("name", "")
        if any(c["name"] == name for c in self.channels.values()):
            return {"ok": False, "error": "name_taken"}
        channel_id = f"C{len(self.channels) + 1:08d}"
        private = str(params.get("is_private")).lower() in ("true", "1")
        self.channels[channel_id] = {"name": name, "is_private": private, "members": {self.bot_user_id}}
        return {"ok": True, "channel": {"id": channel_id, "name": name, "is_private": private}}

    def _conversations_invite(self, params):
        channel = self.channels.get(params.get("channel", ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        channel["members"].update(u for u in str(params.get("users", "")).split(",") if u)
        return {"ok": True, "channel": {"id": params["channel"]}}

    def _pins_add(self, params):
        return {"ok": True}

    def _files_getUploadURLExternal(self, params):
        file_id = f"F{len(self.uploads) + len(self.calls_to('files.getUploadURLExternal')) + 1:08d}"
        return {"ok": True, "upload_url": f"{self.base}/upload/{file_id}", "file_id": file_id}

    def _files_completeUploadExternal(self, params):
        files = json.loads(params.get("files") or "[]")
        return {"ok": True, "files": [{"id": f["id"], "title": f.get("title")} for f in files]}

    def _usergroups_list(self, params):
        return {"ok": True, "usergroups": [{"id": gid, "handle": g["handle"]} for gid, g in self.usergroups.items()]}

    def _usergroups_users_list(self, params):
        group = self.usergroups.get(params.get("usergroup", ""))
        if group is None:
            return {"ok": False, "error": "no_such_subteam"}
        return {"ok": True, "users": list(group["users"])}

    def _chat_postEphemeral(self, params):
        return {"ok": True, "message_ts": self._next_ts()}

    def _users_info(self, params):
        if self.scopes is not None and "users:read" not in self.scopes:
            return {"ok": False, "error": "missing_scope", "needed": "users:read"}
        user = self.users.get(params.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": {"id": params["user"], **user}}

    def _views_open(self, params):
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not params.get("trigger_id") or not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        params["view"] = view
        return {"ok": True, "view": {"id": f"V{next(self._ts):08d}", **view}}

    def _views_publish(self, params):
        view = params.get("view")
        view = json.loads(view) if isinstance(view, str) else view
        if not params.get("user_id") or not isinstance(view, dict) or view.get("type") != "home":
            return {"ok": False, "error": "invalid_arguments"}
        # Slack's own limits for a view: it refuses the whole view, not the part past them.
        texts = [t for b in view.get("blocks", []) for t in _texts(b)]
        if len(view.get("blocks", [])) > 100 or any(len(t) > 3000 for t in texts):
            return {"ok": False, "error": "invalid_blocks"}
        params["view"] = view
        return {"ok": True, "view": {"id": f"V{next(self._ts):08d}", **view}}

    def home_of(self, user: str) -> dict | None:
        """The Home tab ``user`` sees now: the latest view published for them."""
        published = [c.params["view"] for c in self.calls_to("views.publish") if c.params.get("user_id") == user]
        return published[-1] if published else None


def _texts(block: dict) -> list[str]:
    """Every text of a block: its own, its fields', its elements'."""
    found = [block["text"]["text"]] if isinstance(block.get("text"), dict) else []
    found += [f.get("text", "") for f in block.get("fields", [])]
    found += [e.get("text", "") for e in block.get("elements", []) if isinstance(e.get("text"), str)]
    return found
