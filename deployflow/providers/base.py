"""The contracts every backend meets. The flow only ever talks to these.

Two kinds of call, two styles of failure:

- Observations (a metric query, a notification) return what went wrong as data: a
  ``MetricSample`` or ``Reading`` with ``error`` set, a ``NotificationResult`` with ``ok=False``.
  Failing to observe is part of normal operation, and the analysis decides what it means.
- Actions (start a version, stop it, move traffic) raise a ``BackendError`` whose message names the
  backend and what it refused, because the caller must react (roll back, stop, tell a person).

Every backend also says what it is (``describe()``), for logs, reports and the Prefect UI; a
description never contains a secret.

A backend that holds something until it is released (HTTP clients, connections) also has
``close()`` (``Closeable``); for the others closing is a no-op. ``close_backend`` calls it where it
exists, and a deploy closes its backends when it ends.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from deployflow.analysis import MetricSample


class BackendError(RuntimeError):
    """A backend refused an action or could not be reached to perform it."""


class FinalBackendError(BackendError):
    """An action failed for a reason that trying it again would only repeat: a deploy pipeline
    run that ran to its end and failed, or was cancelled at its timeout. The flow's retries skip
    it (a retry would dispatch, and wait for, another run)."""


class BackendConfigError(ValueError):
    """A backend cannot be built from its configuration; the message names the field."""


@dataclass(frozen=True)
class Instance:
    """One running version of the service, reachable at ``host:port``."""

    version: str
    host: str
    port: int
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@runtime_checkable
class Closeable(Protocol):
    """A backend holding resources until ``close()``; optional in every contract. ``close`` is
    safe to call twice, and the backend is not used after it."""

    def close(self) -> None: ...


def close_backend(backend: object) -> None:
    """Release what ``backend`` holds: its ``close()`` when it has one, else nothing (the
    default). A backend's own ``close`` must not raise; cleanup never hides the outcome."""
    if isinstance(backend, Closeable):
        backend.close()


@runtime_checkable
class Preflight(Protocol):
    """A backend that can tell, before a deploy changes anything, that it cannot act as configured
    (nginx's configuration fails ``nginx -t``); optional in every contract."""

    def preflight(self) -> None:
        """Raises:
        BackendError: It cannot act as configured; the message says what to fix.
        """
        ...


def preflight_backend(backend: object) -> None:
    """Run ``backend``'s ``preflight()`` when it has one (the default: nothing to check).

    Raises:
        BackendError: The backend's own check failed.
    """
    if isinstance(backend, Preflight):
        backend.preflight()


@runtime_checkable
class Target(Protocol):
    """Where versions of the service run, and how one is started and stopped.

    Optionally ``close()`` (``Closeable``): a target holding clients or connections releases them
    there; the deploy calls it once it ends. Without it there is nothing to release.
    """

    def start(self, version: str) -> Instance:
        """Start ``version`` and return once it is healthy; a running version is reused.

        Raises:
            BackendError: It did not start or never became healthy (the message has its log).
        """
        ...

    def stop(self, version: str) -> None:
        """Stop ``version``; stopping a version that does not run is not an error.

        Raises:
            BackendError: It could not be stopped.
        """
        ...

    def instances(self) -> list[Instance]:
        """The versions running now."""
        ...

    def logs(self, version: str, lines: int = 40) -> str:
        """The last ``lines`` lines of the output of ``version``; empty when there is none.

        Evidence only: never raises.
        """
        ...

    def health_url(self, instance: Instance) -> str:
        """The URL that answers 2xx while ``instance`` is healthy."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class RouterState:
    """Where traffic goes now. ``canary_weight`` is a percentage 0..100."""

    stable: str | None  # "host:port" of the stable server, None when disabled
    canary: str | None
    canary_weight: int

    def __str__(self) -> str:
        stable = self.stable or "none"
        if self.canary is None or self.canary_weight == 0:
            return f"100% stable ({stable}), canary slot off"
        return (
            f"{100 - self.canary_weight}% stable ({stable}), "
            f"{self.canary_weight}% canary ({self.canary})"
        )


@runtime_checkable
class Router(Protocol):
    """Splits the traffic users send between a stable and a canary instance."""

    @property
    def frontend_url(self) -> str:
        """The URL users reach; smoke requests and critical paths go through it."""
        ...

    def state(self) -> RouterState:
        """Where traffic goes now, as the router reports it.

        Raises:
            BackendError: The router cannot be asked.
        """
        ...

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        """Point the stable slot at ``stable`` and the canary slot at ``canary`` with
        ``canary_weight`` percent of the traffic (0 disables the canary slot).

        Raises:
            BackendError: The router refused or cannot be reached.
        """
        ...

    def promote(self, instance: Instance) -> None:
        """Make ``instance`` the stable server with 100% of the traffic; canary slot disabled.

        Raises:
            BackendError: The router refused or cannot be reached.
        """
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Reading:
    """One figure read from the metrics backend: ``value`` None means no data; ``error`` is set
    when the query itself failed."""

    value: float | None
    error: str | None = None


@runtime_checkable
class Metrics(Protocol):
    """Measures one version of the service over a trailing window."""

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        """Error rate, P95 latency and request count; a failed query is ``sample.error``."""
        ...

    def p95(self, version: str, window_seconds: float) -> Reading:
        """P95 latency in seconds."""
        ...

    def describe(self) -> str: ...


LiveStatus = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class LiveCheck:
    """One check of a spec against the systems it names (``deployflow validate --live``).

    Attributes:
        name: What was checked, as the spec names it (``metrics.queries.error_rate``,
            ``router``, ``dependencies.payments``).
        status: ``ok``; ``warn`` (worth knowing, the deploy would still work); ``fail`` (a
            deploy would not work as configured: fix it first).
        detail: What was asked and what answered (no secret).
    """

    name: str
    status: LiveStatus
    detail: str


@runtime_checkable
class MetricsProbe(Protocol):
    """A metrics backend that can try each of its configured queries for one version and say, per
    query, whether it answers with data (optional beside ``Metrics``; without it the live check
    takes one ``sample``). An observation: never raises."""

    def probe(self, version: str, window_seconds: float) -> list[LiveCheck]:
        """One check per configured query of ``version`` over ``window_seconds``: ``fail`` when
        it fails or answers no data, naming the query (and, where the backend can tell, a metric
        it does not know)."""
        ...


Points = tuple[tuple[float, float], ...]
"""(unix time in seconds, value) pairs, oldest first."""


@dataclass(frozen=True)
class MetricHistory:
    """How one version did over a time range: its error rate (0..1) and P95 (seconds), one point
    per step where it had data. ``error`` is set when the range queries failed."""

    error_rate: Points = ()
    p95_seconds: Points = ()
    error: str | None = None


@dataclass(frozen=True)
class RequestBreakdown:
    """Requests one version served over a time range, by endpoint and status code.

    Attributes:
        rows: (endpoint, status code, requests) triples.
        error: Why there is no breakdown (the query failed, or none is configured).
    """

    rows: tuple[tuple[str, str, float], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class LogRead:
    """Log lines of one version written after a cursor.

    Attributes:
        lines: The new lines, oldest first, without line endings.
        cursor: Where this read ended; pass it to the next ``read``. Opaque to the caller.
        error: Why the logs could not be read (None when they were); never a secret.
    """

    lines: tuple[str, ...] = ()
    cursor: object | None = None
    error: str | None = None


@runtime_checkable
class MetricsOverTime(Metrics, Protocol):
    """A metrics backend that also answers for a past time range (Prometheus' range queries):
    what the reports after a deploy chart and break down. Observations like the rest: a failed
    query is ``error`` in the answer, never raised."""

    def history(
        self,
        version: str,
        start: datetime,
        end: datetime,
        step_seconds: float,
        window_seconds: float,
    ) -> MetricHistory:
        """Error rate and P95 of ``version`` every ``step_seconds`` from ``start`` to ``end``,
        each over the ``window_seconds`` before its point."""
        ...

    def breakdown(self, version: str, start: datetime, end: datetime) -> RequestBreakdown:
        """Requests of ``version`` between ``start`` and ``end`` by endpoint and status code."""
        ...


@runtime_checkable
class LogSource(Protocol):
    """Where the logs of a version are read (a file glob, a command such as ``journalctl`` or
    ``kubectl logs``, the target's own logs). An observation: ``read`` never raises, logs that
    cannot be read are ``LogRead.error`` (the analysis counts it as an Error measurement)."""

    def read(self, version: str, cursor: object | None) -> LogRead:
        """The lines of ``version`` written after ``cursor``; with ``cursor`` None, no lines and
        a cursor at the end of the logs now (where a stage starts reading)."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class FiringAlert:
    """One alert that fires now: its name, its labels, since when, and its summary if any."""

    name: str
    labels: tuple[tuple[str, str], ...] = ()
    starts_at: str = ""
    summary: str = ""

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.labels if k != "alertname")
        text = f"{self.name}{{{shown}}}" if shown else self.name
        if self.starts_at:
            text += f" since {self.starts_at}"
        return text + (f" ({self.summary})" if self.summary else "")


@dataclass(frozen=True)
class AlertsRead:
    """The alerts matching the spec's matchers that fire now (active, not silenced or
    inhibited), or why they could not be asked for (``error``)."""

    alerts: tuple[FiringAlert, ...] = ()
    error: str | None = None

    @property
    def names(self) -> list[str]:
        return sorted({a.name for a in self.alerts})


@runtime_checkable
class AlertSource(Protocol):
    """Which alerts fire now (Alertmanager). An observation: never raises."""

    def firing(self) -> AlertsRead: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class DependencyStatus:
    """Whether one service this one depends on is up, with the figure or answer that shows it."""

    name: str
    ok: bool
    detail: str


@runtime_checkable
class Dependency(Protocol):
    """A service the deployed one depends on (a database, a payment API). An observation:
    ``check`` never raises; a dependency that cannot be checked is not ok."""

    @property
    def name(self) -> str: ...

    def check(self) -> DependencyStatus: ...

    def describe(self) -> str: ...


@runtime_checkable
class FlagProvider(Protocol):
    """Where feature flags live (a flagd flag file now; a remote flag service fits the same two
    calls). A flag has an ``on`` and an ``off`` variant; ``percent`` is the share of users (by a
    stable targeting key) who get ``on``."""

    def set_rollout(self, flag: str, percent: int) -> None:
        """Give ``percent`` (0..100) of users the ``on`` variant; 0 is the kill switch.

        Raises:
            BackendError: The change could not be written.
        """
        ...

    def rollout(self, flag: str) -> int | None:
        """The percent of users who get ``on`` now; None when the flag is not defined.

        Raises:
            BackendError: The flags cannot be read.
        """
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class NotificationResult:
    """Outcome of one notification.

    Attributes:
        ok: True when the channel accepted the message.
        channel: Where it went, for example ``slack #deploys``.
        error: Why delivery failed (None when ok); never contains a secret.
        ts: The channel's id of the posted message, for threading replies.
    """

    ok: bool
    channel: str
    error: str | None = None
    ts: str | None = None

    @property
    def detail(self) -> str:
        return self.error or f"posted to {self.channel}"


@runtime_checkable
class Notifier(Protocol):
    """Tells people about a release. Best effort: ``post`` never raises for a delivery failure,
    because a chat outage must never stop a rollback."""

    def post(self, text: str) -> NotificationResult: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class DeployCard:
    """The facts of one deploy, for a notifier that shows them as one message (Slack Block Kit).

    Attributes:
        title: One line naming the deploy (mrkdwn), e.g. ``Deploying *shop* `v2` to *production*``.
        fields: Labelled facts in order: service, version, environment, strategy, on-call...
        links: Label -> URL: the dashboard, the Prefect run.
        text: The plain announcement (mrkdwn), the fallback shown in notifications.
    """

    title: str
    fields: tuple[tuple[str, str], ...]
    links: tuple[tuple[str, str], ...]
    text: str


@runtime_checkable
class ThreadedNotifier(Notifier, Protocol):
    """A notifier that keeps one conversation per deploy: a parent message (``announce``), the
    stages and the verdict as replies in its thread, and the parent rewritten with the outcome at
    the end (``conclude``). Best effort like ``post``: none of these raises for a delivery
    failure; ``parent`` is what ``announce`` returned."""

    def announce(self, card: DeployCard) -> NotificationResult: ...

    def reply(self, parent: NotificationResult, text: str) -> NotificationResult: ...

    def conclude(self, parent: NotificationResult, outcome: str) -> NotificationResult: ...


@dataclass(frozen=True)
class AnnotationResult:
    """Outcome of one annotation call: ``ok`` with the dashboard's id, or why not (no secret)."""

    ok: bool
    target: str
    id: int | None = None
    error: str | None = None


@runtime_checkable
class Annotator(Protocol):
    """Marks a deploy on dashboards: a region from its start to its end, a point per event
    (stage, promotion, rollback). Best effort: never raises for a delivery failure. One annotator
    serves one deploy (it remembers its region)."""

    def start_region(self, text: str, tags: Sequence[str]) -> AnnotationResult: ...

    def point(self, text: str, tags: Sequence[str], at_ms: int | None = None) -> AnnotationResult:
        """A point now, or at ``at_ms`` (milliseconds since the epoch)."""
        ...

    def end_region(self, text: str) -> AnnotationResult: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class OnCallPerson:
    """Somebody on call: a name for people, and how to reach them when the source knows."""

    name: str
    email: str | None = None

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.email else self.name


@dataclass(frozen=True)
class OnCallRoster:
    """Who is on call now, as one source says.

    Attributes:
        source: Where the answer came from, e.g. ``pagerduty schedules PABC123``.
        people: The people on call now (first escalation level), in the source's order.
        error: Why the source could not be asked (None when it answered); never a secret.
    """

    source: str
    people: tuple[OnCallPerson, ...] = ()
    error: str | None = None

    @property
    def summary(self) -> str:
        """One line for announcements and the confirmation form."""
        if self.error is not None:
            return f"unknown ({self.error})"
        if not self.people:
            return f"nobody ({self.source} names nobody on call now)"
        return ", ".join(str(p) for p in self.people)


@runtime_checkable
class OnCall(Protocol):
    """Says who is on call for the service. An observation: ``current`` never raises, a source
    that cannot be asked is ``OnCallRoster.error``."""

    def current(self) -> OnCallRoster: ...

    def describe(self) -> str: ...


class BlockLoader(Protocol):
    """Loads a saved configuration block by type and name (Prefect blocks, in a flow run)."""

    def load(self, block_type: str, name: str) -> Any:
        """The block; raises ``BackendConfigError`` naming the block when it cannot be loaded."""
        ...


@dataclass(frozen=True)
class BuildContext:
    """What a backend builder may read besides its spec section: the environment (for the
    documented fallbacks like ``DEPLOYFLOW_SLACK_TOKEN``) and saved blocks (the real way to give
    secrets). ``blocks`` is None where no Prefect API is at hand (``deployflow validate``)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    blocks: BlockLoader | None = None
    # What a run is about, for backends that template it into commands (the command target's
    # {service} and {environment}); empty where no run is at hand.
    service: str = ""
    environment: str = ""
    # The run's target, for backends that read through it (the ``target`` log source); None
    # until ``connect`` has built it.
    target: Target | None = None

    def load_block(self, block_type: str, name: str, field_path: str) -> Any:
        """The named block, or a ``BackendConfigError`` that names ``field_path``."""
        if self.blocks is None:
            raise BackendConfigError(
                f"{field_path}: block {name!r} cannot be loaded here (no Prefect API)"
            )
        return self.blocks.load(block_type, name)
