"""Step 5: find what serves now, measure its baseline, start the new version, retire the old."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.figures import millis
from deployflow.providers.base import (
    BackendError,
    Instance,
    Metrics,
    Router,
    Target,
    preflight_backend,
)
from deployflow.release import find_stable
from tasks.retry_policy import QUICK_CALL, no_retries, retried


@task(name="discover-stable", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def discover_stable(router: Router, target: Target) -> Instance | None:
    """The version the router sends traffic to now (None on a first release)."""
    stable = find_stable(router, target)
    logger = get_run_logger()
    if stable is None:
        logger.info("no stable version serves traffic: this is a first release")
    else:
        logger.info("stable version %s at %s", stable.version, stable.address)
    return stable


# A configuration the backend rejects (nginx -t) is an answer, not a glitch: never retried.
@task(name="preflight", cache_policy=NO_CACHE, **retried(QUICK_CALL, final=(BackendError,)))
def preflight(router: Router, target: Target) -> None:
    """The router's and the target's own checks of their configuration, before anything starts
    (``nginx -t`` for the nginx router); backends without one pass.

    Raises:
        BackendError: A backend cannot act as configured.
    """
    for backend in (router, target):
        preflight_backend(backend)
    get_run_logger().info("preflight: router and target ready")


@task(name="measure-baseline", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def measure_baseline(metrics: Metrics, stable: Instance, window_seconds: float) -> float:
    """P95 of the stable version before anything changes: the canary is judged against it.

    Raises:
        RuntimeError: the baseline cannot be measured; without it the deploy must not go on.
    """
    reading = metrics.p95(stable.version, window_seconds)
    if reading.value is None:
        raise RuntimeError(
            f"cannot measure the P95 baseline of {stable.version}: "
            f"{reading.error or 'no data in the baseline window'}"
        )
    get_run_logger().info("baseline P95 of %s: %s", stable.version, millis(reading.value))
    return reading.value


# Never retried: a second start of a github-actions target dispatches a second workflow run, and
# the target bounds its own start (health wait, workflow deadline).
@task(name="execute", cache_policy=NO_CACHE, **no_retries())
def execute(target: Target, version: str) -> Instance:
    """Start the new version and return once it is healthy.

    Not retried (see above); a start that fails fails the deploy before any traffic moves.
    """
    logger = get_run_logger()
    instance = target.start(version)
    logger.info("started %s at %s (pid %s)", version, instance.address, instance.pid)
    startup = target.logs(version, lines=10)
    if startup:
        logger.info("startup log of %s:\n%s", version, startup)
    return instance


@task(name="retire-previous", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def retire_previous(target: Target, previous: Instance) -> None:
    """Stop the old version once the new one is verified."""
    target.stop(previous.version)
    get_run_logger().info("stopped previous version %s", previous.version)
