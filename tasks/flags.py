"""Feature flag tasks: change a flag's share of users, recorded."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.flags.rollout import FlagChangeRecord
from deployflow.providers.base import BackendError, FlagProvider
from deployflow.tracking.ledger import Ledger
from tasks.retry_policy import QUICK_CALL, retried


@task(
    name="set-flag",
    cache_policy=NO_CACHE,
    **retried(QUICK_CALL),
    task_run_name="{flag} to {percent}%",
)
def set_flag(
    flags: FlagProvider, ledger: Ledger, deployment_id: int, flag: str, percent: int, reason: str
) -> FlagChangeRecord:
    """Give ``percent`` of users the flag (0: off for everyone), confirm it, record it.

    Raises:
        BackendError: The provider refused, or does not report the change back.
    """
    flags.set_rollout(flag, percent)
    now = flags.rollout(flag)
    if now != percent:
        raise BackendError(f"{flags.describe()} reports {flag} at {now}% after setting {percent}%")
    ledger.flag_changed(deployment_id, flag, percent, reason)
    (get_run_logger().warning if percent == 0 else get_run_logger().info)(
        "flag %s: %d%% of users (%s)", flag, percent, reason
    )
    return FlagChangeRecord(flag, percent, reason)
