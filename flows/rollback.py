"""Step 8: the automatic rollback subflow, triggered by an analysis or verification verdict."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow, get_run_logger

from deployflow.analysis import Measurement
from deployflow.backends import Backends
from deployflow.error_words import detail, in_words
from deployflow.providers.base import Instance, RouterState
from deployflow.release import RollbackEvidence, RollbackRecord, Trigger
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.story import RollbackVerified, RolledBack
from tasks.prefect_api import keeps_its_result
from tasks.rollback import restore_stable_traffic, router_state, stop_canary
from tasks.verify import router_serving, verify_instance


@flow(
    name="rollback",
    flow_run_name="rollback {canary.version}",
    validate_parameters=False,  # typed objects from the deploy flow, passed as they are
)
@keeps_its_result
def rollback(
    backends: Backends,
    deployment_id: int,
    stable: Instance,
    canary: Instance,
    trigger: Trigger,
    analysis: AnalysisSpec,
    smoke: Sequence[SmokeRequest],
    baseline_p95_seconds: float | None,
    last_measurements: Sequence[Measurement],
    stable_error_rate: float = 0.0,
    restored_at_once: float | None = None,
    stable_p95_seconds: float | None = None,
) -> RollbackRecord:
    """Put all traffic back on the stable version first and say so at once (the story's
    ``RolledBack``: the run's state, its event and the thread reply); then stop the canary, verify
    the stable version and gather evidence, none of which can stand in the way of the restore.

    Only restoring traffic can fail the rollback. Then the row keeps its canary weight, so the next
    deploy reconciles it, and people are told what to do. A failed notification never stops
    anything.

    Args:
        backends: The run's backends (shown by description only).
        deployment_id: The tracking database row of this deploy.
        stable: The version that served traffic before the deploy.
        canary: The version being rolled back.
        trigger: Why: stage, metric, value, threshold.
        analysis: Thresholds and window for verifying the stable version.
        smoke: Smoke requests and critical paths to check through the router.
        baseline_p95_seconds: The stable P95 measured before the deploy.
        last_measurements: The canary's latest measurements, kept as evidence.
        stable_error_rate: The stable version's error rate (at most) measured during the rollout;
            its smoke requests' failures are judged against it.
        restored_at_once: The seconds the rollout's own restore took, when it already put all
            traffic back the moment the stage's verdict came: the router is read to confirm it is
            still so, and traffic is not restored (nor said to be) a second time.
        stable_p95_seconds: The stable version's P95 when it last served beside the canary: its
            P95 is held against this instead of the baseline when it is higher.
    """
    logger = get_run_logger()
    logger.warning("rolling back %s: %s", canary.version, trigger.headline)
    measurements = tuple(last_measurements[-5:])
    try:
        already = still_restored(backends, stable, restored_at_once)
        after, restore_seconds = already or restore_stable_traffic(backends.router, stable)
    except Exception as exc:
        return _restore_failed(backends, stable, canary, trigger, measurements, exc)
    # Told now, not after the checks below: traffic is safe, which is what people wait for.
    backends.story.record(RolledBack(trigger, stable.version))
    try:
        backends.ledger.traffic_restored(deployment_id)
    except Exception as exc:  # the outcome's record says it again; telling never waits on it
        logger.warning("the restore could not be recorded in the tracking database: %s", exc)

    problems: list[str] = []
    log_tail = ""
    try:
        log_tail = stop_canary(backends.target, canary.version)
    except Exception as exc:  # no traffic reaches it any more; say it still runs
        problems.append(f"the canary {canary.version} could not be stopped: {in_words(exc)}")
    report = verify_instance(
        stable,
        target=backends.target,
        router=backends.router,
        metrics=backends.metrics,
        smoke=smoke,
        analysis=analysis,
        baseline_p95_seconds=baseline_p95_seconds,
        transport=backends.http_transport,
        metrics_required=False,
        expected_error_rate=stable_error_rate,
        dependencies=backends.dependencies,
        stable_p95_seconds=stable_p95_seconds,
    )
    record = RollbackRecord(
        trigger,
        verification=report,
        evidence=RollbackEvidence(
            traffic_at_trigger(stable, canary, trigger), after, log_tail, measurements,
            tuple(problems),
        ),
        restore_seconds=restore_seconds,
    )  # fmt: skip
    failed = tuple(c.name for c in report.checks if c.critical and not c.ok)
    backends.story.record(RollbackVerified(stable.version, report.ok, failed))
    if not report.ok:
        logger.error("stable %s is NOT healthy after the rollback", stable.version)
    return record


def still_restored(
    backends: Backends, stable: Instance, restored_at_once: float | None
) -> tuple[RouterState, float] | None:
    """The router's state and the at-once restore's seconds when the rollout already put all
    traffic on ``stable`` and the router still says so; None when traffic must be restored
    here (never restored, moved since, or the router cannot be read: the restore's retries and
    failure handling take over)."""
    if restored_at_once is None:
        return None
    try:
        state = router_state(backends.router)
    except Exception:
        return None
    if state.stable != stable.address or state.canary_weight != 0:
        return None
    get_run_logger().info(
        "traffic is still all on %s (put back when the stage's verdict came): not moved again",
        stable.version,
    )
    return state, restored_at_once


def traffic_at_trigger(stable: Instance, canary: Instance, trigger: Trigger) -> RouterState | None:
    """Where the deploy had put traffic when the trigger fired (what the rollback undid)."""
    if trigger.weight is None:
        return None
    return RouterState(stable.address, canary.address, trigger.weight)


def _restore_failed(
    backends: Backends,
    stable: Instance,
    canary: Instance,
    trigger: Trigger,
    measurements: tuple[Measurement, ...],
    error: Exception,
) -> RollbackRecord:
    """Traffic could not be put back. If the router no longer serves anyone, the canary serves
    nobody either: stop it. If the router still serves, stopping the canary would turn its share
    into errors, so it keeps running until a person (or the next deploy) restores traffic."""
    problems: list[str] = []
    serving = router_serving(backends.router, backends.http_transport)
    if serving:
        action = (
            f"the router still serves users and part of the traffic may still reach "
            f"{canary.version}: put all traffic on {stable.version} by hand "
            f"({backends.router.describe()}), or run the next deploy once the router answers: it "
            "reconciles first"
        )
    else:
        try:
            stop_canary(backends.target, canary.version)
            stopped = f"{canary.version} was stopped"
        except Exception as exc:
            stopped = f"{canary.version} could not be stopped either ({in_words(exc)})"
            problems.append(stopped)
        action = (
            f"the router does not answer at {backends.router.frontend_url}, so nobody is served; "
            f"{stopped}. Bring the router back with {stable.version} as its stable server; the "
            "next deploy reconciles first"
        )
    try:
        now: RouterState | None = router_state(backends.router)
    except Exception as exc:  # evidence only
        now = None
        problems.append(f"router state after the failed restore: {in_words(exc)}")
    # People read the sentence; engineers find the raw error in the log and the evidence.
    action = action[:1].upper() + action[1:]
    message = f"traffic could not be restored to {stable.version}: {in_words(error)}. {action}"
    raw = detail(error)
    get_run_logger().error("the restore to %s failed: %s", stable.version, raw)
    backends.story.record(RolledBack(trigger, stable.version, error=message))
    return RollbackRecord(
        trigger,
        evidence=RollbackEvidence(
            traffic_at_trigger(stable, canary, trigger),
            now,
            "",
            measurements,
            tuple(problems),
            error_detail=raw,
        ),
        error=message,
    )
