"""Step 4: announce the release, name who is on call, link the dashboard; and rollback notices."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import NotificationResult, Notifier, OnCall, OnCallRoster


def _post_all(notifiers: Sequence[Notifier], text: str) -> list[NotificationResult]:
    logger = get_run_logger()
    results: list[NotificationResult] = []
    for notifier in notifiers:
        try:
            result = notifier.post(text)
        except Exception as exc:  # a notifier that breaks its contract must not stop a deploy
            result = NotificationResult(False, notifier.describe(), f"{type(exc).__name__}")
        (logger.info if result.ok else logger.warning)("%s: %s", result.channel, result.detail)
        results.append(result)
    if not notifiers:
        logger.info("no notifiers configured: the run log is the only announcement")
    return results


@task(name="who-is-on-call", cache_policy=NO_CACHE)
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


@task(name="notify-and-prepare", cache_policy=NO_CACHE)
def notify_and_prepare(
    notifiers: Sequence[Notifier], announcement: str, on_call: str | None
) -> list[NotificationResult]:
    """Announce the release in the run log and to every notifier, naming the plan, the on-call
    engineer and the dashboard. A failed delivery is reported, never raised."""
    logger = get_run_logger()
    logger.info("announcement:\n%s", announcement)
    if not on_call:
        logger.warning("no on-call engineer named in notifications.on_call")
    return _post_all(notifiers, announcement)


@task(name="notify-rollback", cache_policy=NO_CACHE)
def notify_rollback(notifiers: Sequence[Notifier], text: str) -> list[NotificationResult]:
    """Tell people about a rollback. Never raises: the rollback goes on whatever happens here."""
    get_run_logger().warning("rollback notice:\n%s", text)
    return _post_all(notifiers, text)
