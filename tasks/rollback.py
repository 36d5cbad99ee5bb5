"""Step 8 tasks: restore traffic, stop the canary and keep its log, read the router's state."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.figures import millis
from deployflow.providers.base import BackendError, Instance, Router, RouterState, Target
from tasks.retry_policy import QUICK_CALL, retried


@task(name="restore-stable-traffic", cache_policy=NO_CACHE, **retried(QUICK_CALL, retries=3))
def restore_stable_traffic(router: Router, stable: Instance) -> tuple[RouterState, float]:
    """All traffic back to the stable version, confirmed by reading the router back. Returns
    the state and the seconds from the call to the router confirming it (a blue-green switch
    back is this one call).

    Raises:
        BackendError: the router refused, or does not report the rollback.
    """
    started = time.perf_counter()
    router.set_split(stable, None, 0)
    state = router.state()
    seconds = time.perf_counter() - started
    if state.stable != stable.address or state.canary_weight != 0:
        raise BackendError(f"router did not take the rollback: {state}")
    get_run_logger().warning("traffic restored in %s: %s", millis(seconds), state)
    return state, seconds


@task(name="stop-canary", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def stop_canary(target: Target, version: str) -> str:
    """Stop the canary; the tail of its log is returned as evidence."""
    log_tail = target.logs(version, lines=40)
    target.stop(version)
    get_run_logger().warning("stopped %s", version)
    return log_tail


@task(name="router-state", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def router_state(router: Router) -> RouterState:
    """Where traffic goes now, as the router reports it (evidence)."""
    return router.state()
