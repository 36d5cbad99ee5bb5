"""Step 5: measure the baseline, start the new version, watch it come up."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.providers.base import Instance
from deployflow.providers.factory import build_metrics, build_router, build_target
from deployflow.release import find_stable
from deployflow.spec import ServiceSpec


@task(name="discover-stable", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def discover_stable(spec: ServiceSpec) -> Instance | None:
    """The version the router sends traffic to now (None on a first release)."""
    stable = find_stable(build_router(spec), build_target(spec))
    logger = get_run_logger()
    if stable is None:
        logger.info("no stable version serves traffic: this is a first release")
    else:
        logger.info("stable version %s at %s", stable.version, stable.address)
    return stable


@task(name="measure-baseline", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def measure_baseline(spec: ServiceSpec, stable: Instance) -> float:
    """P95 of the stable version before anything changes: the canary is judged against it.

    Raises:
        RuntimeError: the baseline cannot be measured; without it the deploy must not go on.
    """
    p95, error = build_metrics(spec).p95(stable.version, spec.analysis.baseline_window)
    if p95 is None:
        raise RuntimeError(
            f"cannot measure the P95 baseline of {stable.version}: "
            f"{error or 'no data in the baseline window'}"
        )
    get_run_logger().info("baseline P95 of %s: %.1f ms", stable.version, p95 * 1000)
    return p95


@task(name="execute", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2)
def execute(spec: ServiceSpec, version: str) -> dict[str, Any]:
    """Start the new version and return once its health endpoint answers.

    Starting is idempotent (a version that already runs is reused), which makes the retry safe.
    """
    logger = get_run_logger()
    target = build_target(spec)
    instance = target.start(version)
    logger.info("started %s at %s (pid %s)", version, instance.address, instance.pid)
    tail = target.log_tail(version, lines=10)
    if tail:
        logger.info("startup log of %s:\n%s", version, tail)
    return {"instance": instance}
