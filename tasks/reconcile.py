"""Before anything else: one deploy per service and environment, and clean up after dead ones."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.figures import duration
from deployflow.providers.base import Router, Target
from deployflow.reconcile import decide_unfinished, reconcile
from deployflow.tracking.lease import lease_alive, lease_seconds
from deployflow.tracking.ledger import ConcurrentDeploy, Ledger
from tasks.retry_policy import QUICK_CALL, retried


class DeployInProgress(ConcurrentDeploy):
    """Another deploy of the same service and environment is running."""


@task(
    name="reconcile-interrupted",
    cache_policy=NO_CACHE,
    **retried(QUICK_CALL, final=(ConcurrentDeploy,)),  # a deploy in progress is an answer
)
def reconcile_interrupted(
    ledger: Ledger,
    router: Router,
    target: Target,
    *,
    service: str,
    environment: str,
    own_flow_run_id: str | None,
) -> list[str]:
    """Refuse to start beside a live deploy; reconcile traffic left by a dead one.

    Whether a deploy is alive is decided by its lease in the tracking database, not by a Prefect
    server: a run killed outright is recognised once its lease lapses (30 s by default).

    Raises:
        DeployInProgress: a deploy of this service and environment is still running.
    """
    logger = get_run_logger()
    messages: list[str] = []
    for row in ledger.unfinished(service, environment, except_flow_run=own_flow_run_id):
        now = datetime.now(UTC)
        alive = not row.ended and lease_alive(row.heartbeat_at, now, lease_seconds())
        action = decide_unfinished(dry_run=row.dry_run, alive=alive, ended=row.ended)
        if action == "ignore":
            continue
        if action == "close":
            ledger.close(row.deployment_id, "aborted", "dry run interrupted")
            continue
        if action == "block":
            age = (now - row.heartbeat_at).total_seconds() if row.heartbeat_at else 0.0
            raise DeployInProgress(
                f"deploy of {service} {row.version} to {environment} is still running (flow run "
                f"{row.flow_run_id}, alive {duration(age)} ago); wait for it. If its process is "
                f"gone, deploy again after {duration(lease_seconds())} without a sign of life: the "
                "next deploy then reconciles it"
            )
        result = reconcile(router, target, row.version)
        logger.warning(result.message)
        if row.ended:
            ledger.settled(row.deployment_id, f"traffic settled by a later run: {result.message}")
        else:
            ledger.close(row.deployment_id, "failed", f"interrupted; {result.message}")
        messages.append(result.message)
    return messages
