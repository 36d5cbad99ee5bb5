"""Tracking writes that are steps of their own: the row of a deploy, and its plan."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from deployflow.strategy import StrategyChoice
from deployflow.tracking.ledger import Ledger


@task(name="record-start", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_start(
    ledger: Ledger,
    *,
    service: str,
    environment: str,
    version: str,
    previous_version: str | None,
    dry_run: bool,
    git_ref: str | None,
    flow_run_id: str | None,
) -> int:
    """Create the deployment row before anything is touched.

    Raises:
        ConcurrentDeploy: another real deploy of this service and environment started at once.
    """
    return ledger.start(
        service=service,
        environment=environment,
        version=version,
        previous_version=previous_version,
        dry_run=dry_run,
        git_ref=git_ref,
        flow_run_id=flow_run_id,
    )


@task(name="record-plan", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_plan(ledger: Ledger, deployment_id: int, plan: StrategyChoice) -> None:
    """The chosen strategy goes on the deployment row."""
    ledger.set_strategy(deployment_id, plan.kind)
