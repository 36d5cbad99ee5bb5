"""Tracking writes that are steps of their own: the row of a deploy, and its plan."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from deployflow.release import ReleaseOutcome
from deployflow.strategy import StrategyChoice
from deployflow.tracking.ledger import ConcurrentDeploy, Ledger
from tasks.retry_policy import DATABASE, retried


@task(name="record-start", cache_policy=NO_CACHE, **retried(DATABASE, final=(ConcurrentDeploy,)))
def record_start(ledger: Ledger, outcome: ReleaseOutcome) -> int:
    """Create the deployment row before anything is touched; returns its id.

    Raises:
        ConcurrentDeploy: another real deploy of this service and environment started at once.
    """
    return ledger.start(outcome)


@task(name="record-plan", cache_policy=NO_CACHE, **retried(DATABASE))
def record_plan(ledger: Ledger, deployment_id: int, plan: StrategyChoice) -> None:
    """The chosen strategy goes on the deployment row."""
    ledger.set_strategy(deployment_id, plan.kind)
