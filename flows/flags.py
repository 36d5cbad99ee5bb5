"""Feature flags of a release, rolled out after the traffic switch with a kill switch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from prefect import flow, get_run_logger

from deployflow.analysis import Verdict
from deployflow.backends import Backends
from deployflow.flags.rollout import FlagChangeRecord, flag_rollout_plan, kill_reason
from deployflow.release import Trigger, stage_trigger
from deployflow.rollout import StageResult
from deployflow.spec import AnalysisSpec, FlagsSpec
from deployflow.story import FlagChanged, StageBegan, StageEnded
from flows.rollout import decide_unproven_stage
from tasks.flags import set_flag
from tasks.prefect_api import keeps_its_result
from tasks.rollout import observe_stage_for


@dataclass
class FlagRolloutResult:
    """Stages observed, flag changes made, the flag killed (if any), and ``trigger`` when the
    version itself is still bad with its flags off (then traffic must switch back)."""

    stages: list[StageResult] = field(default_factory=list)
    changes: list[FlagChangeRecord] = field(default_factory=list)
    killed: str | None = None
    trigger: Trigger | None = None


@flow(
    name="flag-rollout",
    flow_run_name="flags of {version}",
    validate_parameters=False,  # typed objects from the deploy flow, passed as they are
)
@keeps_its_result
def flag_rollout(
    backends: Backends,
    deployment_id: int,
    flags: FlagsSpec,
    analysis: AnalysisSpec,
    version: str,
    baseline_p95_seconds: float | None,
    first_index: int,
) -> FlagRolloutResult:
    """Turn each flag on step by step, each step judged by the same analysis as a stage. A step
    that does not promote turns its flag off at once (the kill switch, no redeploy); the version
    is then observed with the flag off, and only if it is still bad is a trigger returned.

    Args:
        backends: The run's backends; ``backends.flags`` is the flag provider.
        deployment_id: The tracking database row of this deploy.
        flags: The spec's ``flags`` section.
        analysis: Thresholds, interval and window of the analysis.
        version: The version serving all the traffic (green).
        baseline_p95_seconds: The previous version's P95 before the deploy.
        first_index: Stage index of the first flag step.
    """
    logger = get_run_logger()
    b = backends
    result = FlagRolloutResult()
    if b.flags is None:
        raise ValueError("the spec has a flags section but no flag provider was built")
    index = first_index
    for step in flag_rollout_plan(flags.release, flags.steps):
        reason = f"step: {step.percent}% of users"
        result.changes.append(
            set_flag(b.flags, b.ledger, deployment_id, step.flag, step.percent, reason)
        )
        b.story.record(FlagChanged(step.flag, step.percent, reason, version))
        step_label = f"flag {step.flag} on for {step.percent}% of users"
        b.story.record(StageBegan(index, 100, datetime.now(UTC), step_label))
        observed = observe_stage_for(flags.observe, analysis)(
            b.metrics, b.target, b.router, b.ledger, deployment_id,
            version=version, index=index, weight=100, observe_seconds=flags.observe,
            analysis=analysis, baseline_p95_seconds=baseline_p95_seconds,
        )  # fmt: skip
        observed = replace(observed, label=step_label)
        observed = decide_unproven_stage(
            b,
            analysis,
            [*result.stages, observed],
            version,
            f"the flag's next step after {step.percent}%",
            deployment_id=deployment_id,
        )
        result.stages.append(observed)
        b.story.record(StageEnded(observed))
        index += 1
        if observed.verdict is Verdict.PROMOTE:
            continue
        # The trigger in words: the flag's record and the thread quote it, the report the rest.
        stopped = stage_trigger(observed, analysis.max_error_rate)
        why = stopped.headline if stopped else f"verdict {observed.verdict.value}"
        killed = kill_reason(step, why)
        result.changes.append(set_flag(b.flags, b.ledger, deployment_id, step.flag, 0, killed))
        result.killed = step.flag
        logger.warning("flag %s killed; is %s healthy without it?", step.flag, version)
        b.story.record(FlagChanged(step.flag, 0, killed, version))  # never raises
        without = f"{version} with flag {step.flag} off"
        b.story.record(StageBegan(index, 100, datetime.now(UTC), without))
        after = observe_stage_for(flags.observe, analysis)(
            b.metrics, b.target, b.router, b.ledger, deployment_id,
            version=version, index=index, weight=100, observe_seconds=flags.observe,
            analysis=analysis, baseline_p95_seconds=baseline_p95_seconds,
        )  # fmt: skip
        after = replace(after, label=without)
        after = decide_unproven_stage(
            b,
            analysis,
            [*result.stages, after],
            version,
            f"keeping {version} without the flag",
            deployment_id=deployment_id,
        )
        result.stages.append(after)
        b.story.record(StageEnded(after))
        result.trigger = stage_trigger(after, analysis.max_error_rate)
        return result
    return result
