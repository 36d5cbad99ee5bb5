"""Before anything else: one deploy per service and environment, and clean up after dead ones."""

from __future__ import annotations

from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from deployflow.providers.factory import build_router, build_target
from deployflow.reconcile import decide_unfinished, reconcile
from deployflow.spec import ServiceSpec
from deployflow.tracking import repository
from tasks.tracking import session


class DeployInProgress(RuntimeError):
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
    spec: ServiceSpec, environment: str, own_flow_run_id: str | None
) -> list[str]:
    """Refuse to start beside a live deploy; reconcile traffic left by a dead one.

    Raises:
        DeployInProgress: a deploy of this service and environment is still running.
    """
    logger = get_run_logger()
    with session() as s:
        rows = [
            (r.id, r.version, r.flow_run_id, r.dry_run)
            for r in repository.unfinished(s, spec.service, environment)
            if r.flow_run_id != own_flow_run_id
        ]
    messages: list[str] = []
    for row_id, version, run_id, dry_run in rows:
        action = decide_unfinished(dry_run=dry_run, alive=_run_is_alive(run_id))
        if action == "ignore":
            continue
        if action == "close":
            with session() as s:
                repository.update_deployment(
                    s, row_id, status="aborted", summary="dry run interrupted"
                )
            continue
        if action == "block":
            raise DeployInProgress(
                f"deploy of {spec.service} {version} to {environment} is still running "
                f"(flow run {run_id}); wait for it, or cancel it if it is dead "
                f"(prefect flow-run cancel {run_id})"
            )
        result = reconcile(build_router(spec), build_target(spec), version)
        logger.warning(result.message)
        with session() as s:
            repository.update_deployment(
                s, row_id, status="failed", summary=f"interrupted; {result.message}"
            )
        messages.append(result.message)
    return messages
