"""Step 4: announce the release, name who is on call, link the dashboard; and rollback notices."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.notify.plaintext import plain_text
from deployflow.providers.base import (
    Annotator,
    DeployCard,
    NotificationResult,
    Notifier,
    OnCall,
    OnCallRoster,
    ThreadedNotifier,
)
from tasks.retry_policy import NOTIFY, QUICK_CALL, retried


def _post_all(
    notifiers: Sequence[Notifier], text: str, card: DeployCard | None = None
) -> list[NotificationResult]:
    logger = get_run_logger()
    results: list[NotificationResult] = []
    for notifier in notifiers:
        try:
            if card is not None and isinstance(notifier, ThreadedNotifier):
                result = notifier.announce(card)
            else:
                result = notifier.post(text)
        except Exception as exc:  # a notifier that breaks its contract must not stop a deploy
            result = NotificationResult(False, notifier.describe(), f"{type(exc).__name__}")
        (logger.info if result.ok else logger.warning)("%s: %s", result.channel, result.detail)
        results.append(result)
    if not notifiers:
        logger.info("no notifiers configured: the run log is the only announcement")
    return results


@task(name="who-is-on-call", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def who_is_on_call(source: OnCall) -> OnCallRoster:
    """Ask the on-call source (PagerDuty, the spec) who is on call now. Never raises: a source
    that cannot be asked is logged and comes back as the roster's error."""
    roster = source.current()
    logger = get_run_logger()
    if roster.error is not None:
        logger.warning("%s: cannot tell who is on call: %s", roster.source, roster.error)
    else:
        logger.info("on call now (%s): %s", roster.source, roster.summary)
    return roster


@task(name="notify-and-prepare", cache_policy=NO_CACHE, **retried(NOTIFY))
def notify_and_prepare(
    notifiers: Sequence[Notifier],
    announcement: str,
    on_call: str | None,
    card: DeployCard | None = None,
) -> list[NotificationResult]:
    """Announce the release in the run log and to every notifier, naming the plan, the on-call
    engineer and the dashboard; a threaded notifier (Slack) gets ``card`` as the parent message of
    the deploy's thread. A failed delivery is reported, never raised.

    Returns:
        One result per notifier, in order: the parents ``notify_thread`` replies to.
    """
    logger = get_run_logger()
    logger.info("announcement:\n%s", plain_text(announcement))
    if not on_call:
        logger.warning("no on-call engineer named in notifications.on_call")
    return _post_all(notifiers, announcement, card)


@task(name="notify-thread", cache_policy=NO_CACHE, **retried(NOTIFY))
def notify_thread(
    notifiers: Sequence[Notifier],
    parents: Sequence[NotificationResult],
    replies: Sequence[str],
    outcome: str | None = None,
) -> int:
    """Post ``replies`` in the thread each threaded notifier started for this deploy, then, with
    ``outcome``, rewrite its parent message with it. Never raises: a chat outage must not block
    or fail a deploy. Returns how many messages were delivered."""
    logger = get_run_logger()
    delivered = 0
    for notifier, parent in zip(notifiers, parents, strict=False):
        if not isinstance(notifier, ThreadedNotifier):
            continue
        try:
            results = [notifier.reply(parent, text) for text in replies]
            if outcome is not None:
                results.append(notifier.conclude(parent, outcome))
        except Exception as exc:  # a notifier that breaks its contract must not stop a deploy
            logger.warning("%s: thread not updated (%s)", notifier.describe(), type(exc).__name__)
            continue
        for result in results:
            if not result.ok:
                logger.warning("%s: %s", result.channel, result.detail)
        delivered += sum(r.ok for r in results)
    return delivered


@task(name="notify-rollback", cache_policy=NO_CACHE, **retried(NOTIFY))
def notify_rollback(notifiers: Sequence[Notifier], text: str) -> list[NotificationResult]:
    """Tell people about a rollback. Never raises: the rollback goes on whatever happens here."""
    get_run_logger().warning("rollback notice:\n%s", plain_text(text))
    return _post_all(notifiers, text)


@task(name="annotate-dashboards", cache_policy=NO_CACHE, **retried(NOTIFY))
def annotate(
    annotators: Sequence[Annotator],
    tags: Sequence[str],
    *,
    start: str | None = None,
    points: Sequence[str] = (),
    times: Sequence[int] | None = None,
    end: str | None = None,
) -> int:
    """Mark the deploy on dashboards: ``start`` opens its region, each of ``points`` is a point
    (now, or at the matching ``times``, ms since the epoch), ``end`` closes the region. Never
    raises. Returns how many annotations were written."""
    logger = get_run_logger()
    written = 0
    for annotator in annotators:
        try:
            results = [annotator.start_region(start, tags)] if start is not None else []
            at: Sequence[int | None] = times if times is not None else [None] * len(points)
            results += [
                annotator.point(text, tags, at_ms) for text, at_ms in zip(points, at, strict=True)
            ]
            if end is not None:
                results.append(annotator.end_region(end))
        except Exception as exc:  # an annotator that breaks its contract must not stop a deploy
            logger.warning("%s: not annotated (%s)", annotator.describe(), type(exc).__name__)
            continue
        for result in results:
            if not result.ok:
                logger.warning("%s: %s", result.target, result.error)
        written += sum(r.ok for r in results)
    return written
