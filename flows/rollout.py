"""Step 6: the progressive rollout subflow: one conditional branch per canary stage."""

from __future__ import annotations

from prefect import flow, get_run_logger

from deployflow.analysis import Verdict
from deployflow.providers.base import Instance
from deployflow.rollout import StageResult
from deployflow.spec import ServiceSpec
from deployflow.strategy import StrategyChoice
from tasks.rollout import observe_canary_stage, set_traffic


@flow(name="progressive-rollout", flow_run_name="rollout {canary.version}")
def progressive_rollout(
    spec: ServiceSpec,
    deployment_id: int,
    plan: StrategyChoice,
    stable: Instance | None,
    canary: Instance,
    baseline_p95_seconds: float | None,
) -> list[StageResult]:
    """Shift traffic stage by stage; stop at the first stage that does not promote.

    Args:
        spec: The service spec.
        deployment_id: The tracking database row of this deploy.
        plan: Steps and observe time.
        stable: The current stable version (None on a first release).
        canary: The new version.
        baseline_p95_seconds: Stable P95 before the deploy.
    """
    logger = get_run_logger()
    results: list[StageResult] = []
    for index, weight in enumerate(plan.steps):
        set_traffic(spec, deployment_id, stable, canary, weight, index)
        result = observe_canary_stage(
            spec,
            deployment_id,
            canary.version,
            index,
            weight,
            plan.observe_seconds,
            baseline_p95_seconds,
        )
        results.append(result)
        if result.verdict is not Verdict.PROMOTE:
            logger.warning(
                "stage %d at %d%% did not promote: stopping the rollout", index + 1, weight
            )
            break
    return results
