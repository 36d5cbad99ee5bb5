"""A local PagerDuty REST API v2: ``GET /oncalls`` on a loopback port.

It checks the ``Authorization: Token token=...`` header as PagerDuty does (401 with PagerDuty's
error body otherwise), filters by ``schedule_ids[]`` and ``escalation_policy_ids[]``, pages with
``limit``/``offset``/``more``, expands users with ``include[]=users``, and can be told to answer
the next requests with a failure (429 with ``Retry-After``, 500...).

Example:
    with FakePagerDutyAPI(token="pd-test") as pd:
        pd.put_on_call("PSCHED1", "Alice Example", "alice@example.com")
        PagerDutyOnCall(SecretStr("pd-test"), ["PSCHED1"], base_url=pd.base_url).current()
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from deployflow.fakes.loopback import LoopbackServer, ServedFake


@dataclass(frozen=True)
class _OnCall:
    schedule_id: str
    policy_id: str
    level: int
    user_id: str
    name: str
    email: str


@dataclass
class _Failure:
    status: int
    remaining: int
    retry_after: int | None


@dataclass
class _State:
    token: str
    oncalls: list[_OnCall] = field(default_factory=list)
    requests: list[dict[str, list[str]]] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _reply(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        encoded = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def do_GET(self) -> None:
        state = self.server.state
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        with state.lock:
            state.requests.append(query)
            failure = state.failures[0] if state.failures else None
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining == 0:
                    state.failures.pop(0)
        if failure is not None:
            headers = (
                {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
            )
            message = "Rate Limit Exceeded" if failure.status == 429 else "Internal Server Error"
            self._reply(failure.status, {"error": {"message": message, "code": 2020}}, headers)
            return
        if self.headers.get("Authorization") != f"Token token={state.token}":
            self._reply(
                HTTPStatus.UNAUTHORIZED, {"error": {"message": "Unauthorized", "code": 2006}}
            )
            return
        if url.path.rstrip("/") != "/oncalls":
            self._reply(HTTPStatus.NOT_FOUND, {"error": {"message": "Not Found", "code": 2100}})
            return
        self._oncalls(query)

    def _oncalls(self, query: dict[str, list[str]]) -> None:
        state = self.server.state
        schedules = set(query.get("schedule_ids[]", []))
        policies = set(query.get("escalation_policy_ids[]", []))
        expand = "users" in query.get("include[]", [])
        limit = int(query.get("limit", ["25"])[0])
        offset = int(query.get("offset", ["0"])[0])
        with state.lock:
            matching = [
                o
                for o in state.oncalls
                if (not schedules or o.schedule_id in schedules)
                and (not policies or o.policy_id in policies)
            ]
        page = matching[offset : offset + limit]
        self._reply(
            HTTPStatus.OK,
            {
                "oncalls": [_render(o, expand) for o in page],
                "limit": limit,
                "offset": offset,
                "more": offset + limit < len(matching),
                "total": None,
            },
        )


def _render(oncall: _OnCall, expand: bool) -> dict[str, Any]:
    user: dict[str, Any] = {
        "id": oncall.user_id,
        "type": "user_reference",
        "summary": oncall.name,
    }
    if expand:
        user = {**user, "type": "user", "name": oncall.name, "email": oncall.email}
    return {
        "escalation_policy": {
            "id": oncall.policy_id,
            "type": "escalation_policy_reference",
            "summary": f"policy {oncall.policy_id}",
        },
        "escalation_level": oncall.level,
        "schedule": {
            "id": oncall.schedule_id,
            "type": "schedule_reference",
            "summary": f"schedule {oncall.schedule_id}",
        },
        "user": user,
        "start": "2026-11-28T00:00:00Z",
        "end": "2026-11-29T00:00:00Z",
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__(("127.0.0.1", 0), _Handler)


class FakePagerDutyAPI(ServedFake):
    """A PagerDuty REST API server in a background thread, for tests and the sandbox.

    Args:
        token: The only API key accepted; anything else gets 401.
    """

    def __init__(self, token: str = "pd-fake-token") -> None:
        self._state = _State(token=token)

    @property
    def base_url(self) -> str:
        """REST API base URL (what ``https://api.pagerduty.com`` is for PagerDuty itself)."""
        if self._loop is None:
            raise RuntimeError("FakePagerDutyAPI is not started")
        return self._loop.base_url

    @property
    def requests(self) -> list[dict[str, list[str]]]:
        """The query of every request so far, oldest first."""
        with self._state.lock:
            return list(self._state.requests)

    def put_on_call(
        self,
        schedule_id: str,
        name: str,
        email: str | None = None,
        *,
        policy_id: str = "PPOLICY1",
        level: int = 1,
    ) -> None:
        """Put ``name`` on call in ``schedule_id`` (and ``policy_id``) at ``level``."""
        with self._state.lock:
            user_id = f"PUSER{len(self._state.oncalls) + 1:03d}"
            email = email or f"{name.split()[0].lower()}@example.com"
            self._state.oncalls.append(_OnCall(schedule_id, policy_id, level, user_id, name, email))

    def fail_next(self, status: int, *, times: int = 1, retry_after: int | None = None) -> None:
        """Answer the next ``times`` requests with HTTP ``status`` (and ``Retry-After``)."""
        if times < 1:
            raise ValueError(f"times: must be at least 1, got {times}")
        with self._state.lock:
            self._state.failures.append(_Failure(status, times, retry_after))

    def _serve(self) -> LoopbackServer:
        return LoopbackServer(_Server(self._state), name="fake-pagerduty-api")
