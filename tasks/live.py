"""A dry run's live checks: the spec tried against the systems it names (``deployflow.live``)."""

from __future__ import annotations

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.backends import Backends
from deployflow.live import HTTP_TIMEOUT, LiveBackends, LiveReport, check_live
from tasks.retry_policy import NOTIFY, retried


# Never raises (a check that cannot be made is a failed check); the retries cover Prefect's own
# hiccups, and the timeout a backend that hangs past its own.
@task(name="live-checks", cache_policy=NO_CACHE, **retried(NOTIFY))
def live_checks(backends: Backends, window_seconds: float) -> LiveReport:
    """Target, router, health URL, every metrics query for the live version, dependencies and
    alerts, asked now; each check is logged (a failed one as a warning). Never raises."""
    logger = get_run_logger()
    asked = LiveBackends(
        target=backends.target,
        router=backends.router,
        metrics=backends.metrics,
        dependencies=backends.dependencies,
        alerts=backends.alerts.source if backends.alerts is not None else None,
    )
    with httpx.Client(timeout=HTTP_TIMEOUT, transport=backends.http_transport) as http:
        report = check_live(asked, window_seconds, http)
    for check, line in zip(report.checks, report.lines(), strict=True):
        (logger.warning if check.status == "fail" else logger.info)("live check: %s", line)
    return report
