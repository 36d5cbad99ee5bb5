"""Before anything else: one deploy per service and environment, and clean up after dead ones."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from prefect import State, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.exceptions import ObjectNotFound
from prefect.states import Completed, Crashed, Failed

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
from tasks.prefect_api import api_lost, prefect_only
from tasks.retry_policy import QUICK_CALL, no_retries, retried
from tasks.run_tags import outcome_label, tag_outcome


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
    keep_previous: float | None = None,
) -> list[str]:
    """Refuse to start beside a live deploy; reconcile traffic left by a dead one; give the
    service's last runs that Prefect never saw end their final state (``settle_prefect_states``).
    A dead deploy closed as succeeded has the version it replaced recorded as kept for the spec's
    ``keep_previous`` (none: until now), so the retire step stops it.

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
            # Its run died before it stopped the version it replaced: that one is retired as a
            # success retires it (after keep_previous, never while it serves traffic).
            until = datetime.now(UTC) + timedelta(seconds=keep_previous or 0.0)
            kept = ledger.keep_previous_until(row.deployment_id, until)
            if kept is not None:
                logger.info(
                    "%s, the version %s replaced, is retired once it serves no traffic%s",
                    kept,
                    row.version,
                    f" and its keep_previous ends ({until:%H:%M:%S} UTC)" if keep_previous else "",
                )
            by = f"the reconciler of the next deploy of {service} to {environment}"
            set_final_state_afterwards(row.flow_run_id, status, row.dry_run, summary, by)
        else:
            message = result.message
            logger.warning(message)
            mark_crashed(row.flow_run_id, f"deploy of {row.version} died; {message}")
        messages.append(message)
    settle_prefect_states(ledger, service, environment, own_flow_run_id)
    return messages


# How many of the service's last deploys have their Prefect run checked (one read each), and how
# long after its outcome was recorded a run is left to set its own final state (a deploy whose
# API answers slowly sets it within Prefect's client retries, about a minute).
ENDED_RUNS_CHECKED = 5
OWN_FINAL_STATE_SECONDS = 120.0


def state_afterwards(
    status: str, dry_run: bool, summary: str, *, by: str
) -> tuple[Literal["Completed", "Failed"], str, str]:
    """The final state (by name, as ``flows.outcome_state`` ends a deploy: Completed for a
    release or a dry run, Failed otherwise), the outcome tag's label and the state's message for
    the run of a deploy whose outcome the tracking database holds but Prefect never learnt."""
    name: Literal["Completed", "Failed"] = "Completed" if status == "succeeded" else "Failed"
    label = outcome_label(status, dry_run=dry_run)
    message = (
        f"{status} (set afterwards by {by}, from the outcome in the tracking database: Prefect "
        f"never learnt this run's final state): {summary}"
    )
    return name, label, message[:2000]


def settle_prefect_states(
    ledger: Ledger, service: str, environment: str, own_flow_run_id: str | None
) -> list[str]:
    """The runs of the service's last deploys that Prefect still shows unfinished (Running)
    though their outcome is recorded (the deploy lost its Prefect API, finished, recorded and
    exited) get their final state from the tracking database, saying it was set afterwards. Best
    effort: a run on another Prefect server, or none, is left as it is. Returns the flow run ids
    set."""
    try:
        ended = ledger.last_ended(
            service, environment, limit=ENDED_RUNS_CHECKED, except_flow_run=own_flow_run_id
        )
    except Exception as exc:
        get_run_logger().info("the last deploys' Prefect runs were not checked: %s", exc)
        return []
    now = datetime.now(UTC)
    by = f"the next deploy of {service} to {environment}"
    done: list[str] = []
    due = [r for r in ended if (now - r.finished_at).total_seconds() >= OWN_FINAL_STATE_SECONDS]
    # A run that ended more recently is left: its own process may still be setting it.
    if not due or api_lost():
        return done
    try:
        with get_client(sync_client=True) as client:  # one client for them all
            for row in due:
                args = (row.flow_run_id, row.status, row.dry_run, row.summary, by)
                if set_final_state_afterwards(*args, client=client):
                    done.append(row.flow_run_id)
    except Exception as exc:  # never raised: the tracking database holds the truth
        get_run_logger().info("the last deploys' Prefect runs were not checked: %s", exc)
    return done


def set_final_state_afterwards(
    flow_run_id: str | None,
    status: str,
    dry_run: bool,
    summary: str,
    by: str,
    *,
    client: SyncPrefectClient | None = None,
) -> bool:
    """Give a deploy's run still unfinished in Prefect the final state its recorded outcome
    calls for (``state_afterwards``), with its outcome tag. Best effort, never raises: skipped
    while the Prefect API is lost; a run already final, on another server or none is left as it
    is. Returns whether it was set."""
    if not flow_run_id:
        return False
    logger = get_run_logger()
    name, label, message = state_afterwards(status, dry_run, summary, by=by)
    state: State[Any] = (
        Completed(message=message) if name == "Completed" else Failed(message=message)
    )
    what = f"set the final state of flow run {flow_run_id}"
    try:
        if not prefect_only(what, functools.partial(_settle, flow_run_id, state, label, client)):
            return False
    except Exception as exc:
        logger.info("flow run %s left as it is: %s: %s", flow_run_id, type(exc).__name__, exc)
        return False
    logger.warning(
        "flow run %s was still unfinished in Prefect; set to %s (outcome:%s) from the tracking "
        "database",
        flow_run_id,
        name,
        label,
    )
    return True


def _settle(
    flow_run_id: str, state: State[Any], label: str, client: SyncPrefectClient | None
) -> bool:
    """Set the run's final ``state`` and outcome tag unless it already has a final state."""
    if client is None:
        with get_client(sync_client=True) as own:
            return _settle(flow_run_id, state, label, own)
    try:
        run = client.read_flow_run(UUID(flow_run_id))
    except ObjectNotFound:  # a run of another Prefect server (or one deleted): not ours to settle
        return False
    if run.state is None or run.state.is_final():
        return False
    client.set_flow_run_state(run.id, state, force=True)
    tag_outcome(client, run.id, label)
    return True


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
    except ObjectNotFound:
        logger.info("flow run %s of the dead deploy is not on this Prefect server", flow_run_id)
    except Exception as exc:
        logger.info(
            "flow run %s of the dead deploy left as it is: %s: %s",
            flow_run_id, type(exc).__name__, exc,
        )  # fmt: skip


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
