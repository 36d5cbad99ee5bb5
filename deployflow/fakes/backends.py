"""In-memory backends that keep the contracts of ``deployflow.providers.base``.

They let everything that drives backends (the deploy flow's branches, reconciliation, rollback)
be tested in milliseconds, the way httpx ships ``MockTransport``; they pass the same contract
tests as the real backends (``tests/contracts.py``). ``FakeService`` ties them together: the
versions it runs answer HTTP (through ``transport``) and produce metrics according to how each
version is told to behave.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx

from deployflow.analysis import MetricSample
from deployflow.providers.base import (
    AlertsRead,
    BackendError,
    Instance,
    MetricHistory,
    NotificationResult,
    Reading,
    RequestBreakdown,
    RouterState,
)


@dataclass
class Behaviour:
    """How one fake version behaves: its metrics, its health endpoint, paths that break.

    ``latency_buckets`` is its latency histogram as (upper bound, cumulative count) pairs; empty
    means the fake has no histogram, so the canary's latency is judged against the baseline.
    """

    error_rate: float | None = 0.0
    p95_seconds: float | None = 0.05
    requests: float | None = 600.0
    healthy: bool = True
    broken_paths: frozenset[str] = frozenset()
    latency_buckets: tuple[tuple[float, float], ...] = ()


class InMemoryTarget:
    """Versions "run" when started; ports are handed out in order.

    ``fail_start`` and ``fail_stop`` name versions whose start or stop raises ``BackendError``.
    """

    def __init__(self) -> None:
        self.running: dict[str, Instance] = {}
        self.fail_start: set[str] = set()
        self.fail_stop: set[str] = set()
        self.log_lines: dict[str, list[str]] = {}
        self._next_port = 20000

    def start(self, version: str) -> Instance:
        if version in self.fail_start:
            raise BackendError(f"{version} exited with code 1 before becoming healthy")
        if version not in self.running:
            self._next_port += 1
            self.running[version] = Instance(version, "127.0.0.1", self._next_port, pid=None)
            self.log_lines.setdefault(version, []).append(f"{version} listening")
        return self.running[version]

    def stop(self, version: str) -> None:
        if version in self.fail_stop:
            raise BackendError(f"{version} did not stop")
        self.running.pop(version, None)

    def instances(self) -> list[Instance]:
        return list(self.running.values())

    def logs(self, version: str, lines: int = 40) -> str:
        return "\n".join(self.log_lines.get(version, [])[-lines:])

    def health_url(self, instance: Instance) -> str:
        return f"{instance.base_url}/healthz"

    def describe(self) -> str:
        return "in-memory target"


class InMemoryRouter:
    """Two slots and a canary percentage, like the HAProxy backend deployflow drives.

    ``down`` makes every call raise ``BackendError`` (the router is gone).
    """

    frontend_url = "http://frontend.test"

    def __init__(self) -> None:
        self.stable: str | None = None
        self.canary: str | None = None
        self.canary_weight = 0
        self.changes: list[RouterState] = []
        self.down = False

    def _reachable(self) -> None:
        if self.down:
            raise BackendError("router unreachable")

    def state(self) -> RouterState:
        self._reachable()
        return RouterState(self.stable, self.canary, self.canary_weight)

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        self._reachable()
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight must be 0..100, got {canary_weight}")
        if canary is None and canary_weight > 0:
            raise ValueError(f"canary_weight is {canary_weight} but no canary instance was given")
        self.stable = stable.address
        self.canary = canary.address if canary is not None and canary_weight > 0 else None
        self.canary_weight = canary_weight if self.canary else 0
        self.changes.append(self.state())

    def promote(self, instance: Instance) -> None:
        self._reachable()
        self.stable, self.canary, self.canary_weight = instance.address, None, 0
        self.changes.append(self.state())

    def describe(self) -> str:
        return "in-memory router"


class ScriptedMetrics:
    """Metrics computed from each version's ``Behaviour``; ``down`` makes every query fail, and
    ``down_after_samples`` makes samples fail once that many were answered (a backend that dies
    mid-stage)."""

    def __init__(self, behaviour: Callable[[str], Behaviour]) -> None:
        self._behaviour = behaviour
        self.down = False
        self.down_after_samples: int | None = None
        self.queries: list[str] = []

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        self.queries.append(version)
        if self.down_after_samples is not None and len(self.queries) > self.down_after_samples:
            self.down = True
        if self.down:
            return MetricSample(None, None, None, error="metrics backend unreachable")
        b = self._behaviour(version)
        return MetricSample(b.error_rate, b.p95_seconds, b.requests, buckets=b.latency_buckets)

    def p95(self, version: str, window_seconds: float) -> Reading:
        if self.down:
            return Reading(None, error="metrics backend unreachable")
        return Reading(self._behaviour(version).p95_seconds)

    def history(
        self,
        version: str,
        start: datetime,
        end: datetime,
        step_seconds: float,
        window_seconds: float,
    ) -> MetricHistory:
        """The version's scripted figures at every step (flat lines); none for a version that
        served no requests."""
        if self.down:
            return MetricHistory(error="metrics backend unreachable")
        b = self._behaviour(version)
        if not b.requests:
            return MetricHistory()
        t0, t1 = start.timestamp(), end.timestamp()
        steps = max(int((t1 - t0) // step_seconds), 0)
        times = [t0 + i * step_seconds for i in range(steps + 1)]
        return MetricHistory(
            error_rate=tuple((t, b.error_rate) for t in times if b.error_rate is not None),
            p95_seconds=tuple((t, b.p95_seconds) for t in times if b.p95_seconds is not None),
        )

    def breakdown(self, version: str, start: datetime, end: datetime) -> RequestBreakdown:
        """The scripted requests split between ``/`` answered 200 and the errors answered 500,
        and the ``broken_paths`` answered 500."""
        if self.down:
            return RequestBreakdown(error="metrics backend unreachable")
        b = self._behaviour(version)
        if not b.requests:
            return RequestBreakdown()
        errors = round(b.requests * (b.error_rate or 0.0))
        rows = [("/", "200", float(b.requests - errors))]
        if errors:
            rows.append(("/", "500", float(errors)))
        rows += [(p, "500", 1.0) for p in sorted(b.broken_paths)]
        return RequestBreakdown(rows=tuple(rows))

    def describe(self) -> str:
        return "scripted metrics"


@dataclass
class RecordingNotifier:
    """Keeps every message; ``failing`` makes delivery fail (as data, never raised)."""

    failing: bool = False
    messages: list[str] = field(default_factory=list)

    def post(self, text: str) -> NotificationResult:
        self.messages.append(text)
        if self.failing:
            return NotificationResult(False, "fake", error="channel unreachable")
        return NotificationResult(True, "fake")

    def describe(self) -> str:
        return "recording notifier"


class FakeService:
    """A service made of in-memory backends whose versions behave as told.

    Example:
        service = FakeService()
        service.behave("v3", error_rate=0.2)
        service.run_stable("v1")
    """

    def __init__(self) -> None:
        self.behaviours: dict[str, Behaviour] = {}
        self.target = InMemoryTarget()
        self.router = InMemoryRouter()
        self.metrics = ScriptedMetrics(self.behaviour)
        self.notifier = RecordingNotifier()
        self.transport = httpx.MockTransport(self._answer)

    def behaviour(self, version: str) -> Behaviour:
        return self.behaviours.setdefault(version, Behaviour())

    def behave(self, version: str, **changes: object) -> None:
        """Set how ``version`` behaves (any ``Behaviour`` field)."""
        b = self.behaviour(version)
        for name, value in changes.items():
            setattr(b, name, value)

    def run_stable(self, version: str) -> Instance:
        """Start ``version`` and give it all the traffic (the state before a deploy)."""
        instance = self.target.start(version)
        self.router.promote(instance)
        self.router.changes.clear()
        return instance

    def _version_at(self, address: str | None) -> str | None:
        return next((i.version for i in self.target.instances() if i.address == address), None)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if f"{url.scheme}://{url.host}" == self.router.frontend_url:
            if self.router.down:
                raise httpx.ConnectError("connection refused", request=request)
            # Through the router: the canary answers once it has all the traffic, else stable.
            state = self.router.state()
            slot = state.canary if state.canary and state.canary_weight == 100 else state.stable
            version = self._version_at(slot)
        else:
            version = self._version_at(f"{url.host}:{url.port}")
        if version is None:
            return httpx.Response(503, text="no server available")
        b = self.behaviour(version)
        if url.path == "/healthz":
            return httpx.Response(200 if b.healthy else 500)
        return httpx.Response(500 if url.path in b.broken_paths else 200)


class FakeAlerts:
    """An ``AlertSource`` whose answer a test sets: ``read`` is what ``firing`` returns."""

    def __init__(self, read: AlertsRead | None = None) -> None:
        self.read = read if read is not None else AlertsRead()

    def firing(self) -> AlertsRead:
        return self.read

    def describe(self) -> str:
        return "alerts (fake)"
