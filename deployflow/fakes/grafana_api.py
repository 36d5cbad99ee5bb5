"""A local Grafana annotations API on a loopback port: ``POST /api/annotations``,
``PATCH /api/annotations/<id>`` and ``GET /api/annotations``, with bearer-token checks.

Example:
    with FakeGrafanaAPI(token="glsa_test") as grafana:
        GrafanaAnnotator(SecretStr("glsa_test"), grafana.base_url, "abc").point("v2", ["deploy"])
        assert grafana.annotations[0]["text"] == "v2"
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from deployflow.fakes.loopback import LoopbackServer, ServedFake


@dataclass
class _State:
    token: str
    annotations: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_id: int = 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(self, status: int, body: Any) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        self.wfile.write(encoded)

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.state.token}":
            return True
        self._reply(HTTPStatus.UNAUTHORIZED, {"message": "Unauthorized"})
        return False

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        decoded = json.loads(self.rfile.read(length) or b"{}")
        return decoded if isinstance(decoded, dict) else {}

    def do_GET(self) -> None:
        if not self._authorised():
            return
        with self.server.state.lock:
            found = list(self.server.state.annotations.values())
        self._reply(HTTPStatus.OK, found)

    def do_POST(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/api/annotations":
            self._reply(HTTPStatus.NOT_FOUND, {"message": "Not found"})
            return
        body = self._body()
        if "text" not in body:
            self._reply(HTTPStatus.BAD_REQUEST, {"message": "text is required"})
            return
        state = self.server.state
        with state.lock:
            annotation_id = state.next_id
            state.next_id += 1
            time = body.get("time")
            state.annotations[annotation_id] = {
                "id": annotation_id,
                "dashboardUID": body.get("dashboardUID"),
                "panelId": body.get("panelId"),
                "time": time,
                "timeEnd": body.get("timeEnd", time),
                "tags": body.get("tags", []),
                "text": body["text"],
            }
        self._reply(HTTPStatus.OK, {"message": "Annotation added", "id": annotation_id})

    def do_PATCH(self) -> None:
        if not self._authorised():
            return
        tail = self.path.rstrip("/").rsplit("/", 1)[-1]
        state = self.server.state
        body = self._body()
        with state.lock:
            annotation = state.annotations.get(int(tail)) if tail.isdigit() else None
            if annotation is not None:
                for key in ("time", "timeEnd", "text", "tags"):
                    if key in body:
                        annotation[key] = body[key]
        if annotation is None:
            self._reply(HTTPStatus.NOT_FOUND, {"message": "Annotation not found"})
            return
        self._reply(HTTPStatus.OK, {"message": "Annotation patched"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class FakeGrafanaAPI(ServedFake):
    """Grafana's annotations API in a background thread, for tests and the sandbox.

    Args:
        token: The only service account token accepted; anything else gets 401.
    """

    def __init__(self, token: str = "glsa_fake_token") -> None:
        self._state = _State(token=token)

    @property
    def base_url(self) -> str:
        if self._loop is None:
            raise RuntimeError("FakeGrafanaAPI is not started")
        return self._loop.base_url

    @property
    def annotations(self) -> list[dict[str, Any]]:
        """Every annotation stored, oldest first (copies)."""
        with self._state.lock:
            return [dict(a) for a in self._state.annotations.values()]

    def _serve(self) -> LoopbackServer:
        return LoopbackServer(_Server(self._state), name="fake-grafana-api")
