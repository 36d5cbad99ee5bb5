"""Step 7: post-deploy verification (and the rollback's check of the restored version)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Dependency, Instance, Metrics, Router, Target
from deployflow.rollout import thresholds_from
from deployflow.signals import AlertWatch
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.verify import VerificationReport, frontend_answers, verify_version
from tasks.retry_policy import QUICK_CALL, VERIFY, retried


@task(
    name="post-deploy-verification",
    cache_policy=NO_CACHE,
    **retried(VERIFY),
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
    metrics_required: bool = True,
    expected_error_rate: float = 0.0,
    dependencies: Sequence[Dependency] = (),
    alerts: AlertWatch | None = None,
    serving_since: datetime | None = None,
    stable_p95_seconds: float | None = None,
) -> VerificationReport:
    """Health endpoint, smoke requests and critical paths through the router, metrics, the
    dependencies (each named), and the alerts (when given).

    ``metrics_required`` False (the rollback's check of the restored version) lets health and
    smoke decide when metrics cannot be had. ``expected_error_rate`` is the stable version's
    error rate (an upper bound) the smoke requests' failures are judged against.
    ``serving_since`` is when the version's last stage began: its metrics are judged over all
    the traffic since (and the recent window alone for a fresh fault), not one short window.
    ``stable_p95_seconds``: stable's P95 when it last served beside the canary, the P95's
    reference when above the baseline.
    """
    evidence_seconds = None
    if serving_since is not None:
        if serving_since.tzinfo is None:  # deployflow writes UTC; a naive one is taken as such
            serving_since = serving_since.replace(tzinfo=UTC)
        evidence_seconds = (datetime.now(UTC) - serving_since).total_seconds()
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
            metrics_required=metrics_required,
            expected_error_rate=expected_error_rate,
            dependencies=dependencies,
            alerts=alerts.source if alerts is not None else None,
            evidence_seconds=evidence_seconds,
            stable_p95_seconds=stable_p95_seconds,
        )
    logger = get_run_logger()
    for c in report.checks:
        (logger.info if c.ok else logger.error)(
            "%s: %s (%s)", c.name, "ok" if c.ok else "FAILED", c.detail
        )
    return report


@task(name="router-serving", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def router_serving(router: Router, transport: httpx.BaseTransport | None = None) -> bool:
    """Whether the router still serves users at its frontend (any answer counts)."""
    with httpx.Client(transport=transport) as client:
        return frontend_answers(client, router.frontend_url)
