"""Step 6: the progressive rollout subflow: one conditional branch per canary stage, each told as
it ends; a ``pause`` step waits for a person between two stages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

from prefect import flow, get_run_logger

from deployflow.analysis import Breach, Measurement, Verdict
from deployflow.backends import Backends
from deployflow.gates import (
    decided_by_person,
    failed_while_paused,
    gate_refused,
    inconclusive_prompt,
    nobody_decided,
)
from deployflow.manual_rollback import MANUAL_METRIC, asked_by_a_person
from deployflow.providers.base import Instance
from deployflow.rollout import (
    RolloutBroke,
    StageResult,
    canary_gone,
    exposure_after,
    stable_p95_beside,
)
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.story import Answered, Paused, StageBegan, StageEnded
from deployflow.strategy import StrategyChoice
from flows.oncall import StageAnswer, approve_next_stage
from flows.pause_watch import PausedCanaryWatch
from tasks.prefect_api import keeps_its_result
from tasks.rollback import restore_stable_traffic
from tasks.rollout import observe_stage_for, plan_stage_evidence, set_traffic


@flow(
    name="progressive-rollout",
    flow_run_name="rollout {canary.version}",
    validate_parameters=False,  # typed objects from the deploy flow, passed as they are
)
@keeps_its_result
def progressive_rollout(
    backends: Backends,
    deployment_id: int,
    plan: StrategyChoice,
    analysis: AnalysisSpec,
    stable: Instance | None,
    canary: Instance,
    baseline_p95_seconds: float | None,
    probe: Sequence[SmokeRequest] = (),
) -> list[StageResult]:
    """Shift traffic stage by stage; stop at the first stage that does not promote. Each stage
    is told (event, thread reply, dashboard point) the moment it ends; after a stage that a
    ``pause`` step follows, the run waits for a person: no approval in time rolls back.

    A rollback verdict puts all traffic back on the stable version here, at once; the rollback
    subflow then confirms it, stops the canary, verifies stable and tells people.

    Args:
        backends: The run's router, metrics and tracking ledger (shown by description only).
        deployment_id: The tracking database row of this deploy.
        plan: Steps and observe time.
        analysis: Thresholds, interval and window of the analysis.
        stable: The current stable version (None on a first release).
        canary: The new version.
        baseline_p95_seconds: Stable P95 before the deploy, when it served all the traffic:
            what a canary with no stable beside it (the 100% stage) is held against.
        probe: The requests ``analysis.probe_rate`` sends straight to the canary in each stage
            (the spec's smoke requests).
    """
    logger = get_run_logger()
    results: list[StageResult] = []
    if stable is not None:  # what today's traffic buys each stage, in the run log
        plan_stage_evidence(backends.metrics, stable, plan.steps, plan.observe_seconds, analysis)
    try:
        for index, weight in enumerate(plan.steps):
            set_traffic(
                backends.router, backends.ledger, deployment_id, stable, canary, weight, index
            )
            backends.story.record(StageBegan(index, weight, datetime.now(UTC)))
            result = observe_stage_for(plan.observe_seconds, analysis)(
                backends.metrics,
                backends.target,
                backends.router,
                backends.ledger,
                deployment_id,
                version=canary.version,
                index=index,
                weight=weight,
                observe_seconds=plan.observe_seconds,
                analysis=analysis,
                baseline_p95_seconds=baseline_p95_seconds,
                control_version=stable.version if stable is not None else None,
                logs=backends.logs,
                alerts=backends.alerts,
                exposure=exposure_after(plan.steps, index),
                probe=probe,
                transport=backends.http_transport,
                # At 100% stable has no traffic to compare with: its P95 from the last window
                # it served beside the canary counts too, when above the pre-deploy baseline.
                stable_p95_seconds=(
                    stable_p95_beside(results, analysis.min_requests) if weight == 100 else None
                ),
            )
            results.append(result)
            if result.verdict is Verdict.PAUSE:
                following = plan.steps[index + 1] if index + 1 < len(plan.steps) else None
                next_step = f"{following}%" if following is not None else "all the traffic"
                watched = None if stable is None else (stable, canary, baseline_p95_seconds)
                result = results[-1] = decide_unproven_stage(
                    backends,
                    analysis,
                    results,
                    canary.version,
                    next_step,
                    watched,
                    following or 100,
                    deployment_id,
                )
                record_gate_verdict(backends, deployment_id, result)
            backends.story.record(StageEnded(result))
            timeout = plan.pause_after(index)
            last = index + 1 == len(plan.steps)
            refused = False
            if result.verdict is Verdict.PROMOTE and timeout is not None and not last:
                next_weight = plan.steps[index + 1]
                gate = f"approval of stage {index + 2} ({next_weight}%)"
                backends.story.record(
                    Paused(gate, f"approve {next_weight}% on {canary.version}?", timeout)
                )
                answer, breach = answer_while_judged(
                    backends, analysis, stable, canary, baseline_p95_seconds, timeout,
                    partial(approve_next_stage, canary.version, results, next_weight, timeout),
                    deployment_id,
                )  # fmt: skip
                backends.story.record(Answered(gate, answer.approved_by, answer.refusal))
                if breach is not None:  # decides even over an approval given at the same moment
                    result = results[-1] = failed_while_paused(result, breach)
                    refused = True
                elif answer.refusal is not None:
                    result = results[-1] = gate_refused(result, answer.refusal)
                    refused = True
            if result.verdict is Verdict.ROLLBACK and stable is not None:
                seconds = restore_at_once(backends, stable)
                result = results[-1] = replace(result, restore_seconds=seconds)
            if refused:
                record_gate_verdict(backends, deployment_id, result)
            if result.verdict is not Verdict.PROMOTE:
                logger.warning(
                    "stage %d at %d%% did not promote: stopping the rollout", index + 1, weight
                )
                break
    except Exception as exc:
        # The stages judged so far ran and took traffic: the outcome, the report and the
        # rollback's evidence keep them (``RolloutBroke``), whatever broke after them.
        raise RolloutBroke(results, exc) from exc
    return results


def answer_while_judged(
    backends: Backends,
    analysis: AnalysisSpec,
    stable: Instance | None,
    canary: Instance,
    baseline_p95_seconds: float | None,
    timeout: float,
    ask: Callable[[], StageAnswer],
    deployment_id: int | None = None,
) -> tuple[StageAnswer, Measurement | None]:
    """A person's answer (``ask`` pauses the run), with the canary judged against stable while
    the run waits (``PausedCanaryWatch``); the look that failed meanwhile, if any, decides even
    over an approval given at the same moment. A no that came with a person's rollback request
    (``deployflow rollback``, of the row ``deployment_id``) decides as that request."""
    if stable is None:
        answer, breach = ask(), None
    else:
        watch = PausedCanaryWatch(backends, analysis, stable, canary, baseline_p95_seconds, timeout)
        with watch:
            answer = ask()
        breach = watch.breach
    if breach is None and answer.refusal is not None:
        breach = person_asked(backends, deployment_id, baseline_p95_seconds)
    return answer, breach


def person_asked(
    backends: Backends, deployment_id: int | None, baseline_p95_seconds: float | None
) -> Measurement | None:
    """A person's rollback asked while the run waited at a pause (``deployflow rollback``
    records the request, then answers the form with a no): the look that decides, named as the
    person's rollback with their reason rather than as a refusal of the next stage."""
    asked = asked_by_a_person(backends.ledger, deployment_id)
    if asked is None:
        return None
    return canary_gone(Breach(MANUAL_METRIC, None, None, asked), baseline_p95_seconds)


def decide_unproven_stage(
    backends: Backends,
    analysis: AnalysisSpec,
    results: list[StageResult],
    version: str,
    next_step: str,
    watched: tuple[Instance, Instance, float | None] | None = None,
    next_weight: int = 100,
    deployment_id: int | None = None,
) -> StageResult:
    """A stage shown neither healthy nor harmful in its time, where the spec asks a person
    (``on_inconclusive: pause``): the run pauses with a form (promote to ``next_step``, or roll
    back) and nobody answering within ``decision_timeout`` rolls back. With ``watched`` (stable,
    canary, the pre-deploy P95), the canary keeps its traffic and is judged against stable
    meanwhile: a failing look rolls back at once. Returns the stage promoted or rolled back;
    any other stage as it is."""
    last = results[-1]
    if last.verdict is not Verdict.PAUSE:
        return last
    timeout = analysis.decision_timeout
    prompt = inconclusive_prompt(version, results, next_step, timeout)
    gate = (
        f"decision on stage {last.index + 1} ({last.observed}), shown neither healthy nor harmful"
    )
    backends.story.record(Paused(gate, f"promote {version} to {next_step}, or roll back?", timeout))

    def ask() -> StageAnswer:
        return approve_next_stage(
            version, results, next_weight, timeout,
            description=prompt, timeout_refusal=nobody_decided(timeout),
        )  # fmt: skip

    if watched is None:
        answer = ask()
        breach = None
        if answer.refusal is not None:
            breach = person_asked(backends, deployment_id, None)
    else:
        stable, canary, baseline = watched
        answer, breach = answer_while_judged(
            backends, analysis, stable, canary, baseline, timeout, ask, deployment_id
        )
    backends.story.record(Answered(gate, answer.approved_by, answer.refusal))
    if breach is not None:
        return failed_while_paused(last, breach)
    return decided_by_person(last, answer.approved_by, answer.refusal)


def record_gate_verdict(backends: Backends, deployment_id: int, result: StageResult) -> None:
    """The tracking database says what the gate decided, not the figures' promote. A failure
    to write it is logged: it never holds up the rollback."""
    try:
        backends.ledger.stage_verdict_changed(deployment_id, result)
    except Exception:
        get_run_logger().exception(
            "could not record that the gate after stage %d refused", result.index + 1
        )


def restore_at_once(backends: Backends, stable: Instance) -> float | None:
    """All traffic back on ``stable`` the moment a stage's verdict is rollback; the seconds the
    router took to confirm it, None when it refused. One attempt, no retries: if the router
    refuses, the rollback subflow (with its retries and its handling of a router that is gone)
    is next anyway."""
    try:
        _, seconds = restore_stable_traffic.with_options(retries=0)(backends.router, stable)
    except Exception:
        get_run_logger().exception(
            "could not put traffic back on %s at once; the rollback subflow tries again",
            stable.version,
        )
        return None
    return seconds
