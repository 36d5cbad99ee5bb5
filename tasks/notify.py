"""Step 4: who is on call (the announcement itself is the story's ``Announced`` event, which the
chat and dashboard audiences tell)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import OnCall, OnCallRoster
from tasks.retry_policy import QUICK_CALL, retried


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
