"""The spec's ``keep_previous``: the previous version left running after a success is stopped
once its window ends (at the next deploy or rollback of the service, or by the
retire-kept-versions flow)."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.manual_rollback import kept_action
from deployflow.providers.base import Router, Target
from deployflow.tracking.ledger import Ledger
from tasks.retry_policy import QUICK_CALL, retried


def serving_versions(router: Router, target: Target) -> set[str]:
    """The versions the router sends traffic to now."""
    state = router.state()
    addresses = {state.stable} | ({state.canary} if state.canary_weight > 0 else set())
    return {i.version for i in target.instances() if i.address in addresses}


@task(name="retire-kept-versions", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def retire_kept_versions(
    ledger: Ledger, router: Router, target: Target, *, service: str, environment: str
) -> list[str]:
    """Stop every previous version whose ``keep_previous`` window has ended (never one the router
    sends traffic to); returns what was done, a line each."""
    logger = get_run_logger()
    kept = ledger.kept_versions(service, environment)
    if not kept:
        return []
    serving = serving_versions(router, target)
    now = datetime.now(UTC)
    done: list[str] = []
    for k in kept:
        action = kept_action(k.version, k.until, now, serving)
        if action == "keep":
            logger.info(
                "%s stays warm until %s UTC (keep_previous)", k.version, f"{k.until:%H:%M:%S}"
            )
            continue
        if action == "live":
            ledger.kept_version_stopped(k.deployment_id, "serves traffic again")
            continue
        target.stop(k.version)
        ledger.kept_version_stopped(k.deployment_id, "its keep_previous window ended")
        line = f"stopped {k.version}: its keep_previous window ended at {k.until:%H:%M:%S} UTC"
        logger.info(line)
        done.append(line)
    return done
