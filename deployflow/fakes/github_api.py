"""A local fake of the GitHub REST endpoints the review check uses.

Serves ``GET /repos/{owner}/{repo}/commits/{sha}/pulls`` and
``GET /repos/{owner}/{repo}/pulls/{number}/reviews`` from in-memory data, paginated with ``Link``
headers like GitHub, with token checking and injectable failures (401, 404, 5xx, rate limits).
Use it as a real HTTP server on loopback (``with FakeGitHub() as github: github.base_url``) or
in-process through ``github.transport()`` (an ``httpx.MockTransport``).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from deployflow.fakes.loopback import LoopbackServer

_PULLS = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/commits/(?P<sha>[^/]+)/pulls$")
_REVIEWS = re.compile(r"^/repos/(?P<repo>[^/]+/[^/]+)/pulls/(?P<number>\d+)/reviews$")


@dataclass(frozen=True)
class FakeAnswer:
    """A canned answer that replaces the normal one."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Repository:
    pulls_by_commit: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reviews: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


class FakeGitHub:
    """In-memory GitHub answering the review check's endpoints.

    Args:
        token: When set, requests must carry ``Authorization: Bearer <token>`` (or ``token <t>``).
        path_prefix: API root path, e.g. ``/api/v3`` to act like GitHub Enterprise Server.
        per_page_max: Largest page GitHub would return (100 on GitHub; lower it to test paging).
    """

    def __init__(
        self, *, token: str | None = None, path_prefix: str = "", per_page_max: int = 100
    ) -> None:
        self.token = token
        self.path_prefix = path_prefix.rstrip("/")
        self.per_page_max = per_page_max
        self.requests: list[str] = []  # paths with query, in arrival order
        self._repos: dict[str, _Repository] = {}
        self._failures: list[FakeAnswer] = []
        self._always: FakeAnswer | None = None
        self._lock = threading.Lock()
        self._loop: LoopbackServer | None = None
        self._review_ids = 0

    # ----------------------------------------------------------------------------- data setup

    def add_pull(self, repo: str, *, number: int, author: str, commits: list[str]) -> None:
        """Declare pull request ``number`` by ``author`` containing ``commits``."""
        pull = {
            "number": number,
            "state": "closed",
            "title": f"Change {number}",
            "user": {"login": author},
            "html_url": f"https://github.example/{repo}/pull/{number}",
        }
        data = self._repos.setdefault(repo, _Repository())
        for sha in commits:
            data.pulls_by_commit.setdefault(sha, []).append(pull)
        data.reviews.setdefault(number, [])

    def add_review(self, repo: str, number: int, *, reviewer: str, state: str) -> None:
        """Add a review (APPROVED, CHANGES_REQUESTED, COMMENTED, DISMISSED) after earlier ones."""
        self._review_ids += 1
        self._repos[repo].reviews[number].append(
            {
                "id": self._review_ids,
                "user": {"login": reviewer},
                "state": state,
                "submitted_at": f"2024-01-01T00:{self._review_ids // 60:02d}:"
                f"{self._review_ids % 60:02d}Z",
            }
        )

    def add_repo(self, repo: str) -> None:
        """Declare a repository with no pull requests."""
        self._repos.setdefault(repo, _Repository())

    def fail_next(self, answer: FakeAnswer, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``answer`` instead of data."""
        with self._lock:
            self._failures.extend([answer] * times)

    def fail_always(self, answer: FakeAnswer | None) -> None:
        """Answer every request with ``answer`` (None restores normal answers)."""
        self._always = answer

    @staticmethod
    def rate_limited(reset_epoch: int = 1_700_000_000) -> FakeAnswer:
        """GitHub's primary rate limit answer."""
        return FakeAnswer(
            403,
            {"message": "API rate limit exceeded"},
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset_epoch)},
        )

    # -------------------------------------------------------------------------------- answering

    def answer(
        self, method: str, url: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body for one request; the routing both front ends share."""
        parts = urlsplit(url)
        self.requests.append(parts.path + (f"?{parts.query}" if parts.query else ""))
        with self._lock:
            canned = self._failures.pop(0) if self._failures else self._always
        if canned is not None:
            return self._json(canned.status, canned.body, canned.headers)
        lowered = {name.lower(): value for name, value in headers.items()}
        if self.token is not None and lowered.get("authorization") not in (
            f"Bearer {self.token}",
            f"token {self.token}",
        ):
            return self._json(401, {"message": "Bad credentials"})
        if method != "GET":
            return self._json(405, {"message": "Method not allowed"})
        if not parts.path.startswith(self.path_prefix):
            return self._json(404, {"message": "Not Found"})
        path = parts.path[len(self.path_prefix) :]
        items: list[dict[str, Any]] | None = None
        if match := _PULLS.match(path):
            repo = self._repos.get(match["repo"])
            if repo is not None:
                items = repo.pulls_by_commit.get(match["sha"], [])
        elif match := _REVIEWS.match(path):
            repo = self._repos.get(match["repo"])
            if repo is not None and int(match["number"]) in repo.reviews:
                items = repo.reviews[int(match["number"])]
        if items is None:
            return self._json(404, {"message": "Not Found"})
        return self._page(parts.scheme, parts.netloc, parts.path, parse_qs(parts.query), items)

    def _page(
        self,
        scheme: str,
        netloc: str,
        path: str,
        query: dict[str, list[str]],
        items: list[dict[str, Any]],
    ) -> tuple[int, dict[str, str], bytes]:
        per_page = min(int(query.get("per_page", ["30"])[0]), self.per_page_max)
        page = int(query.get("page", ["1"])[0])
        last = max(1, -(-len(items) // per_page))
        headers: dict[str, str] = {}
        links = []
        if page < last:
            for rel, target in (("next", page + 1), ("last", last)):
                query_text = urlencode({"per_page": per_page, "page": target})
                links.append(f'<{scheme}://{netloc}{path}?{query_text}>; rel="{rel}"')
        if links:
            headers["Link"] = ", ".join(links)
        chunk = items[(page - 1) * per_page : page * per_page]
        return self._json(200, chunk, headers)

    @staticmethod
    def _json(
        status: int, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return (
            status,
            {"Content-Type": "application/json", **(headers or {})},
            json.dumps(body).encode(),
        )

    # ------------------------------------------------------------------------------ front ends

    def transport(self) -> httpx.MockTransport:
        """An in-process transport answering like the server would."""

        def handle(request: httpx.Request) -> httpx.Response:
            status, headers, body = self.answer(
                request.method, str(request.url), dict(request.headers)
            )
            return httpx.Response(status, headers=headers, content=body)

        return httpx.MockTransport(handle)

    @property
    def base_url(self) -> str:
        """API root of the running server (including the Enterprise prefix, if any)."""
        if self._loop is None:
            raise RuntimeError("FakeGitHub is not serving; use it as a context manager")
        return f"{self._loop.base_url}{self.path_prefix}"

    def __enter__(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host = self.headers.get("Host", "127.0.0.1")
                status, headers, body = fake.answer(
                    "GET", f"http://{host}{self.path}", dict(self.headers)
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # keep test output clean; requests are recorded in fake.requests

        self._loop = LoopbackServer.for_handler(Handler, name="fake-github").start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._loop is not None:
            self._loop.stop()
        self._loop = None
