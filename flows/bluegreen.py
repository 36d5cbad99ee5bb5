"""Step 6 for blue-green: green judged in isolation, one switch, blue kept warm and observed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from deployflow.analysis import Verdict
from deployflow.backends import Backends
from deployflow.bluegreen import isolation_trigger
from deployflow.flags.rollout import FlagChangeRecord
from deployflow.providers.base import Instance
from deployflow.release import Trigger, stage_trigger, verification_trigger
from deployflow.rollout import RolloutBroke, StageResult
from deployflow.spec import AnalysisSpec, FlagsSpec, SmokeRequest
from deployflow.story import StageBegan, StageEnded
from deployflow.strategy import StrategyChoice
from deployflow.verify import VerificationReport
from flows.flags import flag_rollout
from flows.rollout import decide_unproven_stage
from tasks.bluegreen import check_green_in_isolation, observe_green_in_isolation, switch_to_green
from tasks.prefect_api import keeps_its_result, run_subflow
from tasks.retry_policy import observation_timeout
from tasks.rollout import observe_stage_for, promote
from tasks.verify import verify_instance


@dataclass
class BlueGreenResult:
    """What the blue-green subflow did. ``trigger`` says why to switch back (None: green won);
    ``switch_seconds`` is None when the switch never happened."""

    stages: list[StageResult] = field(default_factory=list)
    isolation: VerificationReport | None = None
    verification: VerificationReport | None = None
    switch_seconds: float | None = None
    flag_changes: list[FlagChangeRecord] = field(default_factory=list)
    flag_killed: str | None = None
    trigger: Trigger | None = None


@flow(
    name="blue-green",
    flow_run_name="blue-green {green.version}",
    validate_parameters=False,  # typed objects from the deploy flow, passed as they are
)
@keeps_its_result
def blue_green(
    backends: Backends,
    deployment_id: int,
    plan: StrategyChoice,
    analysis: AnalysisSpec,
    smoke: Sequence[SmokeRequest],
    blue: Instance,
    green: Instance,
    baseline_p95_seconds: float | None,
    flags: FlagsSpec | None = None,
) -> BlueGreenResult:
    """Judge green with no user traffic, switch all traffic at once, watch green while blue stays
    warm for ``keep_previous``, then promote green. Stops at the first trigger; switching back is
    the rollback subflow's (one router call: blue is still ready in its slot).

    Args:
        backends: The run's target, router, metrics and tracking ledger.
        deployment_id: The tracking database row of this deploy.
        plan: Observe time in isolation, keep-previous window, probe requests.
        analysis: Thresholds, interval and window of the analysis.
        smoke: Smoke requests and critical paths (sent to green directly, then through the router).
        blue: The version serving now.
        green: The new version, started and healthy, with no traffic.
        baseline_p95_seconds: Blue's P95 before the deploy.
        flags: Feature flags to roll out after the switch, while blue is still warm.

    Raises:
        RolloutBroke: A step broke; it carries the stages judged before (they are evidence).
    """
    result = BlueGreenResult()
    try:
        return release_blue_green(
            backends, deployment_id, plan, analysis, smoke, blue, green,
            baseline_p95_seconds, flags, result,
        )  # fmt: skip
    except Exception as exc:
        raise RolloutBroke(result.stages, exc) from exc


def release_blue_green(
    b: Backends,
    deployment_id: int,
    plan: StrategyChoice,
    analysis: AnalysisSpec,
    smoke: Sequence[SmokeRequest],
    blue: Instance,
    green: Instance,
    baseline_p95_seconds: float | None,
    flags: FlagsSpec | None,
    result: BlueGreenResult,
) -> BlueGreenResult:
    """``blue_green``'s steps, filling ``result`` as they go."""
    logger = get_run_logger()
    result.isolation = check_green_in_isolation(b.target, green, smoke, b.http_transport)
    result.trigger = isolation_trigger(green.version, result.isolation)
    if result.trigger is not None:
        return result
    b.story.record(StageBegan(0, 0, datetime.now(UTC), f"{green.version} in isolation"))
    isolated = observe_green_in_isolation.with_options(
        timeout_seconds=observation_timeout(
            analysis.stage_limit(plan.observe_seconds), analysis.interval
        )
    )(
        b.metrics, b.target, b.ledger, deployment_id, green,
        smoke=smoke, analysis=analysis, observe_seconds=plan.observe_seconds,
        probe_requests=plan.probe_requests, baseline_p95_seconds=baseline_p95_seconds,
        transport=b.http_transport,
    )  # fmt: skip
    isolated = decide_unproven_stage(
        b,
        analysis,
        [isolated],
        green.version,
        f"switching all traffic to {green.version}",
        deployment_id=deployment_id,
    )
    result.stages.append(isolated)
    b.story.record(StageEnded(isolated))
    if isolated.verdict is not Verdict.PROMOTE:
        result.trigger = stage_trigger(isolated, analysis.max_error_rate)
        return result

    result.switch_seconds = switch_to_green(b.router, b.ledger, deployment_id, blue, green)
    result.verification = verify_instance(
        green, target=b.target, router=b.router, metrics=b.metrics, smoke=smoke,
        analysis=analysis, baseline_p95_seconds=baseline_p95_seconds,
        transport=b.http_transport, dependencies=b.dependencies, alerts=b.alerts,
        metrics_required=False,  # the isolation stage judged green: only a breach fails it now
    )  # fmt: skip
    result.trigger = verification_trigger(result.verification)
    if result.trigger is not None:
        return result
    if flags is not None:
        rolled = run_subflow(
            flag_rollout, b, deployment_id, flags, analysis, green.version, baseline_p95_seconds,
            first_index=len(result.stages),
        )  # fmt: skip
        result.stages.extend(rolled.stages)
        result.flag_changes, result.flag_killed = rolled.changes, rolled.killed
        if rolled.trigger is not None:
            result.trigger = rolled.trigger
            return result
    warm = f"100% {green.version}, {blue.version} kept warm"
    b.story.record(StageBegan(len(result.stages), 100, datetime.now(UTC), warm))
    kept = observe_stage_for(plan.keep_previous_seconds, analysis)(
        b.metrics, b.target, b.router, b.ledger, deployment_id,
        version=green.version, index=len(result.stages), weight=100,
        observe_seconds=plan.keep_previous_seconds, analysis=analysis,
        baseline_p95_seconds=baseline_p95_seconds, logs=b.logs, alerts=b.alerts,
    )  # fmt: skip
    kept = replace(kept, label=warm)
    kept = decide_unproven_stage(
        b,
        analysis,
        [*result.stages, kept],
        green.version,
        f"retiring {blue.version}",
        deployment_id=deployment_id,
    )
    result.stages.append(kept)
    b.story.record(StageEnded(kept))
    if kept.verdict is not Verdict.PROMOTE:
        result.trigger = stage_trigger(kept, analysis.max_error_rate)
        return result
    promote(b.router, b.ledger, deployment_id, green)
    logger.info("%s promoted; %s can be retired", green.version, blue.version)
    return result
