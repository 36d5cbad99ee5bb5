"""Before anything else: one deploy per service and environment, and clean up after dead ones."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.states import Crashed

from deployflow.figures import duration
from deployflow.providers.base import Router, Target
from deployflow.reconcile import (
    Action,
    LiveVersionLost,
    RestoreResult,
    closing_of_interrupted,
    decide_unfinished,
    reconcile,
    restore_recorded_live,
)
from deployflow.tracking.lease import lease_alive, lease_seconds
from deployflow.tracking.ledger import ConcurrentDeploy, Ledger, UnfinishedDeploy
from tasks.retry_policy import QUICK_CALL, no_retries, retried


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
    for row, action in _unfinished_actions(ledger, service, environment, own_flow_run_id):
        if action == "ignore":
            continue
        if action == "close":
            ledger.close(row.deployment_id, "aborted", "dry run interrupted")
            continue
        result = reconcile(router, target, row.version)
        if row.ended:
            logger.warning(result.message)
            ledger.settled(row.deployment_id, f"traffic settled by a later run: {result.message}")
            messages.append(result.message)
            continue
        rollout = ledger.recorded_rollout(row.deployment_id) if result.promoted else None
        status, summary = closing_of_interrupted(row.version, result, rollout)
        ledger.close(row.deployment_id, status, summary)
        if status == "succeeded":
            message = f"deploy of {row.version} recorded as succeeded: {summary}"
            logger.warning(message)
            mark_crashed(
                row.flow_run_id, f"deploy of {row.version} died after its promotion; {summary}"
            )
        else:
            message = result.message
            logger.warning(message)
            mark_crashed(row.flow_run_id, f"deploy of {row.version} died; {message}")
        messages.append(message)
    return messages


def mark_crashed(flow_run_id: str | None, message: str) -> None:
    """The dead deploy's flow run, still Running in Prefect (nothing of it could say otherwise),
    set to Crashed with what the reconciliation did. Best effort: the run may live on another
    Prefect server, or none; the tracking database already holds the truth."""
    if not flow_run_id:
        return
    logger = get_run_logger()
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is None or run.state.is_final():
                return
            client.set_flow_run_state(run.id, Crashed(message=message[:2000]), force=True)
        logger.info("flow run %s of the dead deploy set to Crashed", flow_run_id)
    except Exception as exc:
        logger.info("flow run %s of the dead deploy left as it is: %s", flow_run_id, exc)


def _unfinished_actions(
    ledger: Ledger, service: str, environment: str, own_flow_run_id: str | None
) -> list[tuple[UnfinishedDeploy, Action]]:
    """Every unfinished row of this service and environment with what to do about it.

    Raises:
        DeployInProgress: one of them is a live deploy (its lease holds).
    """
    found: list[tuple[UnfinishedDeploy, Action]] = []
    for row in ledger.unfinished(service, environment, except_flow_run=own_flow_run_id):
        now = datetime.now(UTC)
        alive = not row.ended and lease_alive(row.heartbeat_at, now, lease_seconds())
        action = decide_unfinished(dry_run=row.dry_run, alive=alive, ended=row.ended)
        if action == "block":
            age = (now - row.heartbeat_at).total_seconds() if row.heartbeat_at else 0.0
            raise DeployInProgress(
                f"deploy of {service} {row.version} to {environment} is still running (flow run "
                f"{row.flow_run_id}, alive {duration(age)} ago); wait for it. If its process is "
                f"gone, deploy again after {duration(lease_seconds())} without a sign of life: the "
                "next deploy then reconciles it"
            )
        found.append((row, action))
    return found


# Never retried: it may start a version through the target (a second attempt of a github-actions
# target would dispatch a second workflow run). A refusal is an answer, not a glitch.
@task(name="restore-live-version", cache_policy=NO_CACHE, **no_retries())
def restore_live_version(
    ledger: Ledger,
    router: Router,
    target: Target,
    *,
    service: str,
    environment: str,
    own_flow_run_id: str | None,
    dry_run: bool,
) -> RestoreResult | None:
    """The tracking database is the truth about what is live: a router that serves no stable
    version (restarted from its configuration) while the database says a version is live gets
    that version back before anything else, so the deploy is never taken for a first release.
    A live deploy of the service is never touched: it is refused first.

    Raises:
        DeployInProgress: a deploy of this service and environment is still running.
        LiveVersionLost: the live version could not be put back; the message says what to do.
    """
    _unfinished_actions(ledger, service, environment, own_flow_run_id)
    live = ledger.deployed(service, environment)
    result = restore_recorded_live(router, target, live.version if live else None, dry_run=dry_run)
    if result is not None:
        get_run_logger().warning(result.message)
    return result


__all__ = ["DeployInProgress", "LiveVersionLost", "reconcile_interrupted", "restore_live_version"]
