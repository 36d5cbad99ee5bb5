"""Blue-green tasks: green judged in isolation, and the switch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import httpx
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow import figures
from deployflow.analysis import Measurement
from deployflow.bluegreen import check_in_isolation, probe_urls, send_probe
from deployflow.providers.base import BackendError, Instance, Metrics, Router, Target
from deployflow.rollout import StageResult, observe_stage, thresholds_from
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.tracking.ledger import Ledger
from deployflow.verify import VerificationReport
from tasks.retry_policy import QUICK_CALL, VERIFY, no_retries, retried


@task(
    name="check-green-in-isolation",
    cache_policy=NO_CACHE,
    task_run_name="check {green.version}",
    **retried(VERIFY),
)
def check_green_in_isolation(
    target: Target,
    green: Instance,
    smoke: Sequence[SmokeRequest],
    transport: httpx.BaseTransport | None = None,
) -> VerificationReport:
    """Green's health endpoint and the smoke requests and critical paths, sent straight to green.

    Args:
        target: Where green runs (its health URL).
        green: The new version, started and in no router slot that has weight.
        smoke: The spec's smoke requests.
        transport: HTTP transport (tests hand in the fake service's).
    """
    with httpx.Client(timeout=5.0, transport=transport) as client:
        report = check_in_isolation(client, target, green, smoke)
    logger = get_run_logger()
    for c in report.checks:
        (logger.info if c.ok else logger.error)(
            "isolation %s: %s (%s)", c.name, "ok" if c.ok else "FAILED", c.detail
        )
    return report


@task(
    name="observe-green-in-isolation",
    cache_policy=NO_CACHE,
    task_run_name="observe {green.version} under probe traffic",
    **no_retries(),  # as observe-stage: a repeat would observe and record green twice
)
def observe_green_in_isolation(
    metrics: Metrics,
    target: Target,
    ledger: Ledger,
    deployment_id: int,
    green: Instance,
    *,
    smoke: Sequence[SmokeRequest],
    analysis: AnalysisSpec,
    observe_seconds: float,
    probe_requests: int,
    baseline_p95_seconds: float | None,
    transport: httpx.BaseTransport | None = None,
) -> StageResult:
    """Green's error rate and P95 under probe traffic sent straight to it, judged by the same
    analysis as a canary stage (stage 1, 0% of user traffic)."""
    logger = get_run_logger()
    probe = probe_urls(target, green, smoke, probe_requests)

    with httpx.Client(timeout=5.0, transport=transport) as client:

        def burst() -> None:
            unanswered = send_probe(client, probe)
            if unanswered:
                logger.warning("%d of %d probe requests got no answer", unanswered, len(probe))

        def gone() -> str | None:
            if not any(i.version == green.version for i in target.instances()):
                return f"{green.version} is no longer running ({target.describe()})"
            return None

        def measured(m: Measurement) -> None:
            s = m.sample
            logger.info(
                "isolation: %s; %s%s",
                m.outcome.value,
                figures.measured(s.error_rate, s.p95_seconds, s.requests),
                f" ({m.note})" if m.note else "",
            )
            burst()  # traffic for the next measurement's window

        burst()
        result = observe_stage(
            metrics,
            version=green.version,
            index=0,
            weight=0,
            baseline_p95_seconds=baseline_p95_seconds,
            thresholds=thresholds_from(analysis),
            observe_seconds=observe_seconds,
            interval_seconds=analysis.interval,
            window_seconds=analysis.window,
            max_seconds=analysis.stage_limit(observe_seconds),
            on_measurement=measured,
            gone=gone,
        )
    result = replace(result, label=f"{green.version} in isolation")
    ledger.stage_observed(deployment_id, result)
    logger.info("isolation verdict %s", result.verdict.value)
    return result


# Never retried: the traffic switch is the release itself; a failure goes to the rollback.
@task(
    name="switch-to-green",
    cache_policy=NO_CACHE,
    task_run_name="switch to {green.version}",
    **no_retries(QUICK_CALL),
)
def switch_to_green(
    router: Router, ledger: Ledger, deployment_id: int, blue: Instance, green: Instance
) -> float:
    """All traffic to green in one router call, blue left ready at weight 0; returns the seconds
    from the decision to the router confirming 100% on green.

    Not retried: a switch that half-happened is the rollback's business (switch back).

    Raises:
        BackendError: The router refused, or does not report 100% on green afterwards.
    """
    ledger.traffic_moving(deployment_id, stage=1, weight=100)
    started = time.perf_counter()
    router.set_split(blue, green, 100)
    state = router.state()
    seconds = time.perf_counter() - started
    if state.canary != green.address or state.canary_weight != 100:
        raise BackendError(f"router did not take the switch to {green.version}: {state}")
    get_run_logger().info(
        "switched to %s in %s; router now: %s", green.version, figures.millis(seconds), state
    )
    return seconds
