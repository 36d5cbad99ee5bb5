"""Before step 5: do not deploy into an incident (firing alerts, dependencies down)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Dependency
from deployflow.signals import AlertWatch, preflight
from tasks.retry_policy import QUICK_CALL, retried


@task(name="pre-flight-signals", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def preflight_signals(alerts: AlertWatch | None, dependencies: Sequence[Dependency]) -> list[str]:
    """Why the deploy must not start: matching alerts already firing (or an Alertmanager that
    cannot be asked), dependencies already down. Empty when it may start."""
    problems = preflight(alerts, dependencies)
    logger = get_run_logger()
    for problem in problems:
        logger.error("blocked: %s", problem)
    if not problems:
        logger.info("no matching alert fires and every dependency is up")
    return problems
