"""Step 8: the automatic rollback subflow, triggered by an analysis or verification verdict."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from deployflow.providers.base import Instance
from deployflow.release import RollbackInfo
from deployflow.spec import ServiceSpec
from tasks.notify import notify_rollback
from tasks.rollback import restore_stable_traffic, router_state, stop_canary, verify_rollback


@flow(name="rollback", flow_run_name="rollback {canary.version}")
def rollback(
    spec: ServiceSpec,
    stable: Instance,
    canary: Instance,
    trigger: RollbackInfo,
    baseline_p95_seconds: float | None,
    last_measurements: list[dict[str, Any]],
) -> RollbackInfo:
    """Put all traffic back on the stable version, stop the canary, verify, gather evidence.

    Args:
        spec: The service spec.
        stable: The version that served traffic before the deploy.
        canary: The version being rolled back.
        trigger: Why: stage, metric, value, threshold.
        baseline_p95_seconds: The stable P95 measured before the deploy.
        last_measurements: The canary's latest measurements, kept as evidence.
    """
    logger = get_run_logger()
    logger.warning("rolling back %s: %s", canary.version, trigger.reason)
    before = router_state(spec)
    after = restore_stable_traffic(spec, stable)
    log_tail = stop_canary(spec, canary.version)
    report = verify_rollback(spec, stable, baseline_p95_seconds)
    trigger.verified = report.ok
    trigger.verification = [c.to_dict() for c in report.checks]
    trigger.evidence = {
        "router_before": before,
        "router_after": after,
        "canary_log_tail": log_tail,
        "last_measurements": last_measurements[-5:],
    }
    # Notifying comes last and cannot fail the rollback: traffic is already safe.
    notify_rollback(
        spec,
        f":rewind: {spec.service} {canary.version} rolled back to {stable.version}: "
        f"{trigger.reason}. Stable verified: {'yes' if report.ok else 'NO'}",
    )
    if not report.ok:
        logger.error("stable %s is NOT healthy after the rollback", stable.version)
    return trigger
