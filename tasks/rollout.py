"""Step 6: move traffic and observe each stage."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.analysis import Measurement
from deployflow.providers.base import Instance
from deployflow.providers.factory import build_metrics, build_router
from deployflow.rollout import StageResult, observe_stage, thresholds_from
from deployflow.spec import ServiceSpec
from deployflow.tracking import repository
from tasks.tracking import session


@task(name="set-traffic", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def set_traffic(
    spec: ServiceSpec,
    deployment_id: int,
    stable: Instance | None,
    canary: Instance,
    weight: int,
    stage: int,
) -> None:
    """Send ``weight`` percent of traffic to the canary; the rest stays on stable.

    The stage and weight are written to the tracking database before the router changes, so a
    restarted run knows where traffic may be.
    """
    with session() as s:
        repository.update_deployment(s, deployment_id, current_stage=stage, canary_weight=weight)
    router = build_router(spec)
    if stable is None or weight >= 100:
        router.promote(canary) if stable is None else router.set_split(stable, canary, 100)
    else:
        router.set_split(stable, canary, weight)
    get_run_logger().info(
        "traffic: %s%% on %s; router now %s", weight, canary.version, router.state()
    )


@task(
    name="observe-stage",
    cache_policy=NO_CACHE,
    task_run_name="observe {weight}% on {version}",
)
def observe_canary_stage(
    spec: ServiceSpec,
    deployment_id: int,
    version: str,
    index: int,
    weight: int,
    observe_seconds: float,
    baseline_p95_seconds: float | None,
) -> StageResult:
    """Measure the canary every interval until the stage promotes or rolls back."""
    logger = get_run_logger()

    def log(m: Measurement) -> None:
        s = m.sample
        logger.info(
            "stage %d (%d%%): %s; error rate %s, P95 %s, requests %s%s",
            index + 1,
            weight,
            m.outcome.value,
            "n/a" if s.error_rate is None else f"{s.error_rate:.2%}",
            "n/a" if s.p95_seconds is None else f"{s.p95_seconds * 1000:.1f} ms",
            "n/a" if s.requests is None else f"{s.requests:.0f}",
            f" ({m.note})" if m.note else "",
        )

    result = observe_stage(
        build_metrics(spec),
        version=version,
        index=index,
        weight=weight,
        baseline_p95_seconds=baseline_p95_seconds,
        thresholds=thresholds_from(spec.analysis),
        observe_seconds=observe_seconds,
        interval_seconds=spec.analysis.interval,
        window_seconds=spec.analysis.window,
        on_measurement=log,
    )
    with session() as s:
        repository.add_stage_result(
            s,
            deployment_id,
            index=index,
            weight=weight,
            verdict=result.verdict.value,
            started_at=result.started_at,
            finished_at=result.finished_at,
            measurements=[m.to_dict() for m in result.measurements],
            reason=result.reason.reason if result.reason else None,
        )
    if result.reason:
        logger.warning(
            "stage %d verdict %s: %s", index + 1, result.verdict.value, result.reason.reason
        )
    else:
        logger.info("stage %d verdict %s", index + 1, result.verdict.value)
    return result
