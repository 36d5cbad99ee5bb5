"""What happened in a deploy, told once: typed events recorded by the flow and heard by every
audience (the run log, the chat thread, dashboards, Prefect's event feed, a recording fake).

The flow calls ``Recorder.record`` once per thing that happened; each ``Listener`` turns the event
into its own medium. Telling is best effort: a listener that raises is logged and the deploy goes
on (a chat outage never stops a rollback). Argo Rollouts' ``EventRecorder`` is the model: one call
feeds logs, events, metrics and notifications.

A new audience (a webhook, a status page, a change ticket) is one listener module and one line in
its registry: ``deployflow.audiences.AUDIENCES`` for plain ones, ``tasks.audiences`` for those that
need Prefect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from deployflow.providers.base import NotificationResult
from deployflow.rollout import StageResult

if TYPE_CHECKING:
    from deployflow.release import ReleaseOutcome, Trigger

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deploy:
    """Which deploy the story is about (events, tags and threads name it)."""

    service: str
    version: str
    environment: str
    deployment_id: int | None = None
    flow_run_id: str | None = None
    previous_version: str | None = None
    dry_run: bool = False
    git_ref: str | None = None
    started_at: datetime | None = None

    @classmethod
    def of(cls, outcome: ReleaseOutcome) -> Deploy:
        return cls(
            outcome.service,
            outcome.version,
            outcome.environment,
            outcome.deployment_id,
            outcome.flow_run_id,
            outcome.previous_version,
            outcome.dry_run,
            outcome.git_ref,
            outcome.started_at,
        )


@dataclass(frozen=True)
class Started:
    """The deploy has its tracking row and begins the steps."""

    deploy: Deploy


@dataclass(frozen=True)
class Announced:
    """Step 4: the plan is known and people are told (the parent message of the thread)."""

    strategy: str
    steps: tuple[int, ...]
    rationale: str
    on_call: str | None = None
    risk_factors: tuple[str, ...] = ()
    dashboard_url: str | None = None
    run_url: str | None = None


@dataclass(frozen=True)
class StageBegan:
    """Traffic moved: ``weight`` percent now goes to the new version (``label``: what the stage
    observes when it is not a canary at that weight, e.g. green in isolation, a flag step)."""

    index: int
    weight: int
    at: datetime
    label: str = ""


@dataclass(frozen=True)
class StageEnded:
    """A stage was judged; its figures are the stage's last measurement."""

    stage: StageResult


@dataclass(frozen=True)
class Paused:
    """The run waits for a person (``gate``: ``on-call`` or ``stage 2``)."""

    gate: str
    question: str
    timeout_seconds: float


@dataclass(frozen=True)
class Answered:
    """A paused gate was answered: by whom, or why the deploy must not go on."""

    gate: str
    by: str | None
    refusal: str | None = None


@dataclass(frozen=True)
class FlagChanged:
    """A feature flag now reaches ``percent`` of users (0 is the kill switch)."""

    flag: str
    percent: int
    reason: str
    version: str = ""


@dataclass(frozen=True)
class RolledBack:
    """Traffic is back on ``restored_to`` (or, with ``error``, could not be put back). Told the
    moment the router confirms it, before the canary is stopped and the stable version checked
    (``RollbackVerified`` follows): people learn the outcome when it happens, not after the
    evidence is gathered."""

    trigger: Trigger
    restored_to: str
    error: str | None = None


@dataclass(frozen=True)
class RollbackVerified:
    """After a rollback, the stable version ``restored_to`` was checked: healthy (``ok``) or
    not, with the checks that failed."""

    restored_to: str
    ok: bool
    failed: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchemaSettled:
    """What became of the schema a rolled-back release applied (``deployflow.schema``): kept,
    downgraded or left, with the state and the command to undo it in ``message``."""

    status: str
    message: str


@dataclass(frozen=True)
class Ended:
    """The deploy is over: its outcome (status, message, stages) as recorded."""

    outcome: ReleaseOutcome
    dashboard_url: str | None = None


StoryEvent = (
    Started
    | Announced
    | StageBegan
    | StageEnded
    | Paused
    | Answered
    | FlagChanged
    | (RolledBack | RollbackVerified | SchemaSettled | Ended)
)


@runtime_checkable
class Listener(Protocol):
    """One audience of the story. ``hear`` may raise: the recorder contains it."""

    def describe(self) -> str: ...

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None: ...


@runtime_checkable
class Announces(Protocol):
    """A listener that posts the deploy's announcement keeps what each channel answered."""

    parents: list[NotificationResult]


class Recorder:
    """Hands each event to every listener, in order, best effort. One per run (``connect``);
    shared by the run's subflows (it travels inside ``Backends``)."""

    def __init__(
        self,
        listeners: Iterable[Listener] = (),
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.listeners: tuple[Listener, ...] = tuple(listeners)
        self.deploy: Deploy | None = None
        self._warn = warn

    def describe(self) -> list[str]:
        return [listener.describe() for listener in self.listeners]

    def record(self, event: StoryEvent) -> None:
        """Tell every listener; never raises."""
        if isinstance(event, Started):
            self.deploy = event.deploy
        elif isinstance(event, Ended) and self.deploy is None:
            self.deploy = Deploy.of(event.outcome)
        for listener in self.listeners:
            try:
                listener.hear(event, self.deploy)
            except Exception as exc:  # telling never decides anything
                self.warn(f"{listener.describe()} did not hear {type(event).__name__}: {exc!r}")

    def warn(self, message: str) -> None:
        try:
            if self._warn is not None:
                self._warn(message)
                return
        except Exception:  # the run's logger is gone (teardown): the process log still has it
            pass
        logger.warning(message)

    def announcements(self) -> list[NotificationResult]:
        """What each notifier answered to the announcement (the deploy's record keeps it)."""
        return [
            p
            for listener in self.listeners
            if isinstance(listener, Announces)
            for p in listener.parents
        ]

    def with_listeners(self, extra: Sequence[Listener]) -> Recorder:
        """A recorder that also tells ``extra`` (first), keeping this one's logger."""
        return Recorder([*extra, *self.listeners], self._warn)
