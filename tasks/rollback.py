"""Step 8 tasks: restore traffic, stop the canary, verify stable, gather evidence."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Instance
from deployflow.providers.factory import build_router, build_target
from deployflow.spec import ServiceSpec
from deployflow.verify import VerificationReport
from tasks.verify import log_report, verify_instance


@task(name="restore-stable-traffic", cache_policy=NO_CACHE, retries=3, retry_delay_seconds=1)
def restore_stable_traffic(spec: ServiceSpec, stable: Instance) -> str:
    """All traffic back to the stable version."""
    router = build_router(spec)
    router.set_split(stable, None, 0)
    state = router.state()
    if state.stable != stable.address or state.canary_weight != 0:
        raise RuntimeError(f"router did not take the rollback: {state}")
    get_run_logger().warning("traffic restored: 100%% on %s (%s)", stable.version, state)
    return str(state)


@task(name="stop-canary", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def stop_canary(spec: ServiceSpec, version: str) -> str:
    """Stop the canary and keep the tail of its log as evidence."""
    target = build_target(spec)
    tail = target.log_tail(version, lines=40)
    target.stop(version)
    get_run_logger().warning("stopped %s", version)
    return tail


@task(name="verify-rollback", cache_policy=NO_CACHE)
def verify_rollback(
    spec: ServiceSpec, stable: Instance, baseline_p95_seconds: float | None
) -> VerificationReport:
    """The stable version is healthy and under the thresholds after the rollback."""
    return log_report(verify_instance(spec, stable, baseline_p95_seconds, smoke=True))


@task(name="router-state", cache_policy=NO_CACHE)
def router_state(spec: ServiceSpec) -> dict[str, Any]:
    s = build_router(spec).state()
    return {"stable": s.stable, "canary": s.canary, "canary_weight": s.canary_weight}
