"""Step 8: the automatic rollback subflow, triggered by an analysis or verification verdict."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import flow, get_run_logger

from deployflow.analysis import Measurement
from deployflow.backends import Backends
from deployflow.providers.base import Instance, RouterState
from deployflow.release import RollbackEvidence, RollbackRecord, Trigger
from deployflow.spec import AnalysisSpec, SmokeRequest
from tasks.notify import notify_rollback
from tasks.rollback import restore_stable_traffic, router_state, stop_canary
from tasks.verify import verify_instance


@flow(
    name="rollback",
    flow_run_name="rollback {canary.version}",
    validate_parameters=False,  # typed objects from the deploy flow, passed as they are
)
def rollback(
    backends: Backends,
    service: str,
    stable: Instance,
    canary: Instance,
    trigger: Trigger,
    analysis: AnalysisSpec,
    smoke: Sequence[SmokeRequest],
    baseline_p95_seconds: float | None,
    last_measurements: Sequence[Measurement],
) -> RollbackRecord:
    """Put all traffic back on the stable version, stop the canary, verify, gather evidence.

    Only restoring traffic can fail the rollback; evidence that cannot be gathered is noted, and
    people are told in every case (a failed notification never stops anything).

    Args:
        backends: The run's backends (shown by description only).
        service: The service's name, for the notice.
        stable: The version that served traffic before the deploy.
        canary: The version being rolled back.
        trigger: Why: stage, metric, value, threshold.
        analysis: Thresholds and window for verifying the stable version.
        smoke: Smoke requests and critical paths to check through the router.
        baseline_p95_seconds: The stable P95 measured before the deploy.
        last_measurements: The canary's latest measurements, kept as evidence.
    """
    logger = get_run_logger()
    logger.warning("rolling back %s: %s", canary.version, trigger.reason)
    problems: list[str] = []
    evidence_measurements = tuple(last_measurements[-5:])
    before: RouterState | None = None
    try:
        before = router_state(backends.router)
    except Exception as exc:  # evidence only: the rollback goes on without it
        problems.append(f"router state before the rollback: {exc}")
    try:
        after = restore_stable_traffic(backends.router, stable)
    except Exception as exc:
        logger.error(
            "ROLLBACK FAILED: traffic could not be restored to %s: %s", stable.version, exc
        )
        record = RollbackRecord(
            trigger,
            evidence=RollbackEvidence(before, None, "", evidence_measurements, tuple(problems)),
            error=f"traffic could not be restored to {stable.version}: {exc}",
        )
        notify_rollback(
            backends.notifiers,
            f":rotating_light: {service} {canary.version}: ROLLBACK FAILED, traffic could not "
            f"be restored to {stable.version}: {exc}. Trigger: {trigger.reason}",
        )
        return record
    log_tail = ""
    try:
        log_tail = stop_canary(backends.target, canary.version)
    except Exception as exc:  # no traffic reaches it any more; say it still runs
        problems.append(f"the canary {canary.version} could not be stopped: {exc}")
    report = verify_instance(
        stable,
        target=backends.target,
        router=backends.router,
        metrics=backends.metrics,
        smoke=smoke,
        analysis=analysis,
        baseline_p95_seconds=baseline_p95_seconds,
        transport=backends.http_transport,
    )
    record = RollbackRecord(
        trigger,
        verification=report,
        evidence=RollbackEvidence(
            before, after, log_tail, tuple(last_measurements[-5:]), tuple(problems)
        ),
    )
    # Notifying comes last and cannot fail the rollback: traffic is already safe.
    notify_rollback(
        backends.notifiers,
        f":rewind: {service} {canary.version} rolled back to {stable.version}: "
        f"{trigger.reason}. Stable verified: {'yes' if report.ok else 'NO'}",
    )
    if not report.ok:
        logger.error("stable %s is NOT healthy after the rollback", stable.version)
    return record
