"""Step 3: choose the strategy."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.spec import StrategySpec
from deployflow.strategy import StrategyChoice, StrategyName, choose_strategy


@task(name="choose-strategy", cache_policy=NO_CACHE)
def choose_strategy_task(
    configured: StrategySpec, override: StrategyName, has_stable: bool
) -> StrategyChoice:
    """Pick direct or canary for this release and say why.

    Args:
        configured: The spec's ``strategy`` section.
        override: ``auto`` keeps the spec's strategy; ``canary`` or ``direct`` overrides it.
        has_stable: Whether a stable version serves traffic now.
    """
    choice = choose_strategy(configured, override, has_stable=has_stable)
    get_run_logger().info(
        "strategy %s, steps %s, observe %.0fs per stage: %s",
        choice.kind,
        list(choice.steps),
        choice.observe_seconds,
        choice.rationale,
    )
    return choice
