"""Steady synthetic traffic against the sandbox frontend, so the canary analysis has data.

Requests go out on a fixed schedule (``rps`` per second in total) from a few worker threads, so a
slow canary does not slow the request rate down much (as real clients would not wait for each
other). It runs until ``stop()`` (or ``max_duration`` seconds, when given); the workers are daemon
threads, so a forgotten generator ends with its process. ``stopped_reason`` says why a generator
that was not stopped no longer sends.
"""

from __future__ import annotations

import http.client
import select
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.client import HTTPConnection
from types import TracebackType
from urllib.parse import urlsplit


class TrafficGenerator:
    """Send ``rps`` GET requests per second to ``base_url``, cycling through ``paths``.

    Example:
        with TrafficGenerator("http://127.0.0.1:8080", rps=40) as traffic:
            ...
        print(traffic.status_counts())
    """

    def __init__(
        self,
        base_url: str,
        rps: float = 40,
        paths: Sequence[str] = ("/", "/api/items", "/api/checkout"),
        *,
        max_duration: float | None = None,
        workers: int = 4,
        request_timeout: float = 5.0,
        keep_alive: bool = True,
    ) -> None:
        """Configure the generator; ``start()`` begins sending.

        Args:
            base_url: Where to send (the HAProxy frontend).
            rps: Total requests per second across workers.
            paths: Paths requested in turn.
            max_duration: Seconds after which the generator stops by itself (None: never).
            workers: Threads sharing the schedule; each one waits for its own responses.
            request_timeout: Seconds before a request counts as a transport error.
            keep_alive: Reuse connections between requests (as browsers do). Without it every
                request opens its own connection, which an nginx reload never closes under it
                (a retiring worker closes its idle keep-alive connections at once).
        """
        if rps <= 0:
            raise ValueError(f"rps must be greater than zero, got {rps}")
        if not paths:
            raise ValueError("paths must name at least one path")
        if max_duration is not None and max_duration <= 0:
            raise ValueError(f"max_duration must be greater than zero, got {max_duration}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        _Client(base_url, request_timeout, keep_alive)  # says now when base_url is no http URL
        self.base_url = base_url.rstrip("/")
        self.rps = float(rps)
        self.paths = tuple(paths)
        self.max_duration = max_duration
        self.workers = workers
        self.request_timeout = request_timeout
        self.keep_alive = keep_alive
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts: Counter[int] = Counter()
        self._transport_errors = 0
        self._threads: list[threading.Thread] = []
        self._stopped_reason: str | None = None

    def start(self) -> TrafficGenerator:
        """Start the worker threads (daemon threads: they never keep the interpreter alive)."""
        if self._threads:
            raise RuntimeError("traffic generator already started")
        started = time.monotonic()
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._run,
                args=(index, started),
                name=f"deployflow-traffic-{index}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        return self

    def _run(self, index: int, started: float) -> None:
        try:
            self._send_loop(index, started)
        except Exception as exc:  # say why traffic stopped instead of dying silently
            with self._lock:
                self._stopped_reason = f"worker {index} failed: {type(exc).__name__}: {exc}"
            return
        if not self._stop.is_set():
            with self._lock:
                self._stopped_reason = f"max_duration of {self.max_duration:g} s reached"

    def _send_loop(self, index: int, started: float) -> None:
        # Worker ``index`` owns the slots index, index + workers, ...: evenly interleaved sends.
        period = self.workers / self.rps
        next_send = started + index / self.rps
        deadline = float("inf") if self.max_duration is None else started + self.max_duration
        sent = 0
        client = _Client(self.base_url, self.request_timeout, self.keep_alive)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= deadline:
                    return
                # Event.wait paces the schedule and still wakes at once on stop().
                if next_send > now and self._stop.wait(next_send - now):
                    return
                path = self.paths[(index + sent * self.workers) % len(self.paths)]
                sent += 1
                status = client.get(path)
                with self._lock:
                    if status is None:
                        self._transport_errors += 1
                    else:
                        self._counts[status] += 1
                next_send += period
                # After a stall (slow responses), skip missed slots rather than burst to catch up.
                next_send = max(next_send, time.monotonic() - period)
        finally:
            client.close()

    def status_counts(self) -> dict[int, int]:
        """Responses so far by HTTP status code."""
        with self._lock:
            return dict(self._counts)

    @property
    def transport_errors(self) -> int:
        """Requests that got no HTTP answer (refused, reset, timed out)."""
        with self._lock:
            return self._transport_errors

    @property
    def total(self) -> int:
        """Requests that got an HTTP answer."""
        with self._lock:
            return sum(self._counts.values())

    @property
    def stopped_reason(self) -> str | None:
        """Why sending stopped without ``stop()`` being called (None while it sends)."""
        with self._lock:
            return self._stopped_reason

    @property
    def running(self) -> bool:
        """True while at least one worker still sends."""
        return any(thread.is_alive() for thread in self._threads)

    def stop(self, timeout: float | None = None) -> None:
        """Stop sending and join the workers (at most one request timeout each by default)."""
        self._stop.set()
        join_timeout = self.request_timeout + 1.0 if timeout is None else timeout
        for thread in self._threads:
            thread.join(join_timeout)

    def __enter__(self) -> TrafficGenerator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Client:
    """One worker's connection: the standard library's HTTP client, a third of httpx's CPU per
    request (the sandbox sends 100 requests/s beside the deploy it serves, on the same cores).

    Like httpx's pool, a kept-alive connection the server has closed meanwhile (an nginx reload
    closes idle ones) is dropped before it is reused rather than failing the next request.
    """

    def __init__(self, base_url: str, timeout: float, keep_alive: bool) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self._factory = http.client.HTTPSConnection if url.scheme == "https" else HTTPConnection
        self._host, self._port = url.hostname, url.port
        self._prefix = url.path.rstrip("/")
        self._timeout = timeout
        self._headers = {} if keep_alive else {"Connection": "close"}
        self._connection: HTTPConnection | None = None

    def get(self, path: str) -> int | None:
        """The status of ``GET path``, or None when no HTTP answer came."""
        connection = self._reusable() or self._connect()
        try:
            connection.request("GET", self._prefix + path, headers=self._headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            return None
        if response.will_close:
            self.close()
        return response.status

    def _connect(self) -> HTTPConnection:
        self._connection = self._factory(self._host, self._port, timeout=self._timeout)
        return self._connection

    def _reusable(self) -> HTTPConnection | None:
        connection = self._connection
        if connection is None or connection.sock is None:
            return None
        # An idle connection has nothing to read; readable means the server closed it.
        readable, _, _ = select.select([connection.sock], [], [], 0)
        if readable:
            self.close()
            return None
        return connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
