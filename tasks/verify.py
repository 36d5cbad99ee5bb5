"""Step 7: post-deploy verification."""

from __future__ import annotations

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Instance
from deployflow.providers.factory import build_metrics
from deployflow.rollout import thresholds_from
from deployflow.spec import ServiceSpec
from deployflow.verify import (
    VerificationCheck,
    VerificationReport,
    check_health,
    check_metrics,
    check_smoke,
)


def verify_instance(
    spec: ServiceSpec,
    instance: Instance,
    baseline_p95_seconds: float | None,
    *,
    smoke: bool,
) -> VerificationReport:
    """Health endpoint, smoke requests and critical paths through the router, metrics."""
    checks: list[VerificationCheck] = []
    with httpx.Client(timeout=5.0) as client:
        checks.append(
            check_health(
                client,
                instance.base_url,
                spec.target.health_path,
                name=f"health: {instance.version}",
            )
        )
        if smoke:
            checks.extend(check_smoke(client, spec.router.frontend_url, s) for s in spec.smoke)
    checks.append(
        check_metrics(
            build_metrics(spec),
            instance.version,
            window_seconds=spec.analysis.window,
            baseline_p95_seconds=baseline_p95_seconds,
            thresholds=thresholds_from(spec.analysis),
        )
    )
    return VerificationReport(tuple(checks))


@task(name="post-deploy-verification", cache_policy=NO_CACHE)
def post_deploy_verification(
    spec: ServiceSpec, instance: Instance, baseline_p95_seconds: float | None
) -> VerificationReport:
    """Verify the new version now that it carries all the traffic."""
    return log_report(verify_instance(spec, instance, baseline_p95_seconds, smoke=True))


def log_report(report: VerificationReport) -> VerificationReport:
    """One log line per check: errors for the failed ones."""
    logger = get_run_logger()
    for c in report.checks:
        (logger.info if c.ok else logger.error)(
            "%s: %s (%s)", c.name, "ok" if c.ok else "FAILED", c.detail
        )
    return report
