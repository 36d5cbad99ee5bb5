"""A local Slack Web API: ``chat.postMessage`` (with threads), ``chat.update`` and ``auth.test``
on a loopback port.

Point ``slack_sdk.WebClient(base_url=fake.base_url)`` (or ``SlackNotifier``) at it. It checks the
bearer token like Slack does, answers Slack's error codes, records the messages it accepted, and can
be told to fail the next requests (HTTP 429 with ``Retry-After``, 500, ...).

Example:
    with FakeSlackAPI(token="xoxb-test", channels=["deploys"]) as slack:
        SlackNotifier(SecretStr("xoxb-test"), "#deploys", base_url=slack.base_url).post("hi")
        assert slack.messages[0].text == "hi"
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from deployflow.fakes.loopback import LoopbackServer, ServedFake


@dataclass(frozen=True)
class ReceivedMessage:
    """A message the fake accepted through ``chat.postMessage`` (``ts`` is the id Slack gave it,
    ``thread_ts`` the parent it replies to), or a rewrite through ``chat.update``."""

    channel: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    payload: dict[str, Any]
    ts: str = ""
    thread_ts: str | None = None


@dataclass
class _InjectedFailure:
    status: int
    remaining: int
    retry_after: int | None
    error: str


@dataclass
class _State:
    token: str
    channels: dict[str, str]  # name without '#' -> channel id, and id -> id
    messages: list[ReceivedMessage] = field(default_factory=list)
    updates: list[ReceivedMessage] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    failures: list[_InjectedFailure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_ts: int = 1


class _SlackHandler(BaseHTTPRequestHandler):
    server: _SlackServer

    def log_message(self, format: str, *args: Any) -> None:
        # Keep test output clean; the recorded calls are the fake's log.
        return

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def _payload(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode() if length else ""
        if not raw:
            return {}
        if (self.headers.get("Content-Type") or "").startswith("application/json"):
            decoded = json.loads(raw)
            return decoded if isinstance(decoded, dict) else {}
        return {key: values[-1] for key, values in parse_qs(raw).items()}

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        state = self.server.state
        method = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        payload = self._payload()
        with state.lock:
            state.calls.append(method)
            failure = state.failures[0] if state.failures else None
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining == 0:
                    state.failures.pop(0)
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            self._reply(failure.status, {"ok": False, "error": failure.error}, headers)
            return

        authorization = self.headers.get("Authorization") or ""
        token = (
            authorization.removeprefix("Bearer ").strip() if authorization else payload.get("token")
        )
        if not token:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "not_authed"})
            return
        if token != state.token:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "invalid_auth"})
            return

        if method == "auth.test":
            self._reply(
                HTTPStatus.OK,
                {
                    "ok": True,
                    "url": "https://fake.slack.local/",
                    "team": "fake",
                    "user": "deployflow",
                },
            )
        elif method == "chat.postMessage":
            self._post_message(payload)
        elif method == "chat.update":
            self._update(payload)
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"ok": False, "error": "unknown_method"})

    def _post_message(self, payload: dict[str, Any]) -> None:
        state = self.server.state
        channel = str(payload.get("channel") or "")
        channel_id = state.channels.get(channel.removeprefix("#"))
        if channel_id is None:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "channel_not_found"})
            return
        text = payload.get("text")
        blocks = payload.get("blocks")
        if isinstance(blocks, str):  # form-encoded clients send blocks as a JSON string
            blocks = json.loads(blocks)
        if not text and not blocks:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "no_text"})
            return
        thread_ts = payload.get("thread_ts") or None
        with state.lock:
            ts = f"1700000000.{state.next_ts:06d}"
            state.next_ts += 1
            state.messages.append(
                ReceivedMessage(channel, text, blocks, payload, ts=ts, thread_ts=thread_ts)
            )
        self._reply(
            HTTPStatus.OK,
            {"ok": True, "channel": channel_id, "ts": ts, "message": {"text": text, "ts": ts}},
        )

    def _update(self, payload: dict[str, Any]) -> None:
        state = self.server.state
        channel = str(payload.get("channel") or "")
        ts = str(payload.get("ts") or "")
        # Like Slack, chat.update takes the channel's id only, never its name.
        if channel not in state.channels or state.channels[channel] != channel:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "channel_not_found"})
            return
        blocks = payload.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        with state.lock:
            known = any(
                m.ts == ts and state.channels.get(m.channel.removeprefix("#")) == channel
                for m in state.messages
            )
            if known:
                state.updates.append(
                    ReceivedMessage(channel, payload.get("text"), blocks, payload, ts=ts)
                )
        if not known:
            self._reply(HTTPStatus.OK, {"ok": False, "error": "message_not_found"})
            return
        self._reply(HTTPStatus.OK, {"ok": True, "channel": channel, "ts": ts})


class _SlackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        # Port 0: the kernel picks a free port atomically (no race with another process).
        super().__init__(("127.0.0.1", 0), _SlackHandler)


class FakeSlackAPI(ServedFake):
    """A Slack Web API server in a background thread, for tests and the sandbox.

    Args:
        token: The only bot token accepted; anything else gets ``invalid_auth``.
        channels: Channel names (with or without ``#``) that exist; others get
            ``channel_not_found``.
    """

    def __init__(
        self, token: str = "xoxb-fake-token", channels: Iterable[str] = ("deploys",)
    ) -> None:
        known: dict[str, str] = {}
        for number, name in enumerate(channels, start=1):
            channel_id = f"C{number:08d}"
            known[name.removeprefix("#")] = channel_id
            known[channel_id] = channel_id
        self._state = _State(token=token, channels=known)

    @property
    def port(self) -> int:
        """The loopback port the server listens on."""
        if self._loop is None:
            raise RuntimeError("FakeSlackAPI is not started")
        return self._loop.port

    @property
    def base_url(self) -> str:
        """Web API base URL to give to ``WebClient(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Messages accepted so far, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.messages)

    @property
    def updates(self) -> list[ReceivedMessage]:
        """Rewrites accepted through ``chat.update`` so far, oldest first (a copy)."""
        with self._state.lock:
            return list(self._state.updates)

    def thread(self, ts: str) -> list[ReceivedMessage]:
        """The replies in the thread of message ``ts``, oldest first."""
        return [m for m in self.messages if m.thread_ts == ts]

    @property
    def calls(self) -> list[str]:
        """Every Web API method requested so far, including refused and failed ones."""
        with self._state.lock:
            return list(self._state.calls)

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: int | None = None,
        error: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` instead of handling them.

        Args:
            status: HTTP status, e.g. 429 or 500.
            times: How many requests fail before normal service resumes.
            retry_after: Seconds for the ``Retry-After`` header (Slack sends it with 429).
            error: Slack error code in the body; ``ratelimited`` for 429, else ``fatal_error``.
        """
        if times < 1:
            raise ValueError(f"times: must be at least 1, got {times}")
        code = error or ("ratelimited" if status == HTTPStatus.TOO_MANY_REQUESTS else "fatal_error")
        with self._state.lock:
            self._state.failures.append(_InjectedFailure(status, times, retry_after, code))

    def _serve(self) -> LoopbackServer:
        return LoopbackServer(_SlackServer(self._state), name="fake-slack-api")
