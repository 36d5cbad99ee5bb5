"""Before anything else: one deploy per service and environment, and clean up after dead ones."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from deployflow.providers.base import Router, Target
from deployflow.reconcile import decide_unfinished, reconcile
from deployflow.tracking.ledger import ConcurrentDeploy, Ledger


class DeployInProgress(ConcurrentDeploy):
    """Another deploy of the same service and environment is running."""


def _run_is_alive(flow_run_id: str | None) -> bool:
    if not flow_run_id:
        return False
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            return False  # recorded by another Prefect server, or deleted: nobody drives it now
    return run.state is not None and not run.state.is_final()


@task(name="reconcile-interrupted", cache_policy=NO_CACHE)
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

    Raises:
        DeployInProgress: a deploy of this service and environment is still running.
    """
    logger = get_run_logger()
    messages: list[str] = []
    for row in ledger.unfinished(service, environment, except_flow_run=own_flow_run_id):
        alive = not row.ended and _run_is_alive(row.flow_run_id)
        action = decide_unfinished(dry_run=row.dry_run, alive=alive, ended=row.ended)
        if action == "ignore":
            continue
        if action == "close":
            ledger.close(row.deployment_id, "aborted", "dry run interrupted")
            continue
        if action == "block":
            raise DeployInProgress(
                f"deploy of {service} {row.version} to {environment} is still running "
                f"(flow run {row.flow_run_id}); wait for it, or cancel it if it is dead "
                f"(prefect flow-run cancel {row.flow_run_id})"
            )
        result = reconcile(router, target, row.version)
        logger.warning(result.message)
        if row.ended:
            ledger.settled(row.deployment_id, f"traffic settled by a later run: {result.message}")
        else:
            ledger.close(row.deployment_id, "failed", f"interrupted; {result.message}")
        messages.append(result.message)
    return messages
