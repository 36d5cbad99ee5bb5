"""A running deploy told as it happens: each stage as it ends (an event, a reply in the deploy's
Slack thread, a dashboard point), a rollback in the same thread, and an interrupted run's end.

Nothing here can block or fail a deploy or a rollback: every delivery is best effort, and a
failure is logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefect import get_run_logger

from deployflow import events
from deployflow.notify.story import stage_line
from deployflow.providers.base import NotificationResult, ThreadedNotifier
from deployflow.rollout import StageResult
from tasks.events import send_events
from tasks.notify import annotate, notify_rollback, notify_thread

if TYPE_CHECKING:
    from deployflow.backends import Backends
    from deployflow.release import ReleaseOutcome


@dataclass(frozen=True)
class Progress:
    """Where a deploy tells its progress: which deploy (for events and dashboard tags) and the
    parent message each notifier started for it (in the order of ``Backends.notifiers``)."""

    service: str
    version: str
    environment: str
    deployment_id: int | None
    parents: tuple[NotificationResult, ...] = ()
    flow_run_id: str | None = None

    @classmethod
    def of(cls, outcome: ReleaseOutcome) -> Progress:
        return cls(
            outcome.service,
            outcome.version,
            outcome.environment,
            outcome.deployment_id,
            tuple(outcome.notifications),
            outcome.flow_run_id,
        )

    @property
    def tags(self) -> list[str]:
        """Dashboard annotation tags of this deploy."""
        return annotation_tags(self)


def annotation_tags(deploy: events.DeployIdentity) -> list[str]:
    return [
        "deployflow",
        f"service:{deploy.service}",
        f"environment:{deploy.environment}",
        f"version:{deploy.version}",
    ]


def tell_stage(b: Backends, progress: Progress | None, stage: StageResult) -> None:
    """The stage that just ended: its event (when promoted), its reply in the thread and its
    dashboard point at the time it ended. Never raises."""
    if progress is None:
        return
    try:
        event = events.stage_promoted(progress, stage)
        if event is not None:
            send_events(event)
        line = stage_line(stage)
        notify_thread(b.notifiers, progress.parents, [line])
        if b.annotators:
            at = int(stage.finished_at.timestamp() * 1000)
            annotate(b.annotators, progress.tags, points=[line], times=[at])
    except Exception:  # the stage's verdict stands whatever the telling does
        get_run_logger().warning("stage %d was not told", stage.index + 1, exc_info=True)


def tell_rollback(b: Backends, progress: Progress | None, text: str) -> None:
    """A rollback notice: a reply in each deploy thread, with the parent message rewritten to
    say it; a notifier without threads (or whose parent never posted) gets it as a message; a
    dashboard point marks it. Never raises: the rollback goes on whatever happens here."""
    try:
        parents = progress.parents if progress is not None else ()
        threaded = [
            (n, p)
            for n, p in zip(b.notifiers, parents, strict=False)
            if isinstance(n, ThreadedNotifier) and p.ok
        ]
        in_thread = {id(n) for n, _ in threaded}
        others = [n for n in b.notifiers if id(n) not in in_thread]
        if threaded:
            notifiers = [n for n, _ in threaded]
            notify_thread(notifiers, [p for _, p in threaded], [text], outcome=text)
        if others or not threaded:
            notify_rollback(others, text)
        if b.annotators and progress is not None:
            annotate(b.annotators, progress.tags, points=[text])
    except Exception:
        get_run_logger().warning("the rollback notice was not sent", exc_info=True)


def tell_interrupted(b: Backends, outcome: ReleaseOutcome, ending: str) -> None:
    """An interrupted run (SIGTERM, cancellation, Ctrl-C) ends: its ending event, the reply and
    rewritten parent in the thread, the end of its dashboard region. Called while Prefect tears
    the run down, so it calls the backends directly (no tasks); never raises."""
    logger = get_run_logger()
    send_events(events.ended(outcome))
    for notifier, parent in zip(b.notifiers, outcome.notifications, strict=False):
        if not isinstance(notifier, ThreadedNotifier) or not parent.ok:
            continue
        try:
            notifier.reply(parent, ending)
            notifier.conclude(parent, ending)
        except Exception:
            logger.warning("%s: thread not updated", notifier.describe(), exc_info=True)
    text = f"{outcome.version} {outcome.status.replace('_', ' ')}: {outcome.message}"
    for annotator in b.annotators:
        try:
            annotator.point(text, [*annotation_tags(outcome), outcome.status])
            annotator.end_region(text)
        except Exception:
            logger.warning("%s: not annotated", annotator.describe(), exc_info=True)
