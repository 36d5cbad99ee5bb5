"""Step 7: post-deploy verification (and the rollback's check of the restored version)."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Instance, Metrics, Router, Target
from deployflow.rollout import thresholds_from
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.verify import VerificationReport, verify_version


@task(
    name="post-deploy-verification",
    cache_policy=NO_CACHE,
    task_run_name="verify {instance.version}",
)
def verify_instance(
    instance: Instance,
    *,
    target: Target,
    router: Router,
    metrics: Metrics,
    smoke: Sequence[SmokeRequest],
    analysis: AnalysisSpec,
    baseline_p95_seconds: float | None,
    transport: httpx.BaseTransport | None = None,
) -> VerificationReport:
    """Health endpoint, smoke requests and critical paths through the router, metrics."""
    with httpx.Client(timeout=5.0, transport=transport) as client:
        report = verify_version(
            instance,
            target=target,
            router=router,
            metrics=metrics,
            smoke=smoke,
            thresholds=thresholds_from(analysis),
            window_seconds=analysis.window,
            baseline_p95_seconds=baseline_p95_seconds,
            client=client,
        )
    logger = get_run_logger()
    for c in report.checks:
        (logger.info if c.ok else logger.error)(
            "%s: %s (%s)", c.name, "ok" if c.ok else "FAILED", c.detail
        )
    return report
