"""Step 3: measure the release's risk and choose the strategy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.figures import duration
from deployflow.release import CheckRecord
from deployflow.risk import ChangeSize, RiskAssessment, RiskSpec, assess_risk, measure_change
from deployflow.spec import StrategySpec
from deployflow.strategy import StrategyChoice, StrategyName, choose_strategy, release_risk_facts
from deployflow.tracking.ledger import Ledger


@task(name="assess-risk", cache_policy=NO_CACHE)
def assess_risk_task(
    ledger: Ledger,
    risk: RiskSpec,
    *,
    service: str,
    environment: str,
    checkout: Path | None,
    new_ref: str | None,
    checks: Sequence[CheckRecord],
) -> RiskAssessment:
    """The risk table of this release: the change since the deployed commit (git), what the
    checks found, the recent change failure rate (tracking database), freeze windows.

    Args:
        ledger: The tracking database (the deployed commit and recent deploys).
        risk: The spec's ``risk`` section.
        service: Service name.
        environment: Where it goes.
        checkout: The service's git checkout (pre_checks.checkout), None when the spec has none.
        new_ref: The commit being released.
        checks: Results of steps 1 and 2.
    """
    logger = get_run_logger()
    deployed = ledger.deployed(service, environment)
    change: ChangeSize | str
    if checkout is None:
        change = "the change could not be measured: the spec has no pre_checks.checkout"
    elif deployed is None or not deployed.git_ref:
        change = "the change could not be measured: no deployed commit is recorded"
    elif not new_ref:
        change = "the change could not be measured: the new commit is unknown"
    else:
        change = measure_change(checkout, deployed.git_ref, new_ref)
    facts = release_risk_facts(
        change=change,
        checks=checks,
        recent_results=ledger.recent_results(service, environment, risk.history),
        now=datetime.now(UTC),
    )
    assessment = assess_risk(facts, risk)
    for f in assessment.factors:
        logger.info(
            "risk %-20s %6.2f (weight %g x %g): %s",
            f.name,
            f.contribution,
            f.weight,
            f.units,
            f.fact + (f" [at least {f.floor}]" if f.floor else ""),
        )
    logger.info("%s", assessment.explanation())
    return assessment


@task(name="choose-strategy", cache_policy=NO_CACHE)
def choose_strategy_task(
    configured: StrategySpec,
    override: StrategyName,
    has_stable: bool,
    environment: str = "",
    risk: RiskAssessment | None = None,
) -> StrategyChoice:
    """Pick direct, canary or blue-green for this release and say why.

    Args:
        configured: The spec's ``strategy`` section.
        override: ``auto`` follows the spec (a fixed kind, a pin, or the risk); any other kind
            overrides it.
        has_stable: Whether a stable version serves traffic now.
        environment: Where it goes (pins are per environment).
        risk: The release's risk table, when it was assessed.
    """
    choice = choose_strategy(
        configured, override, has_stable=has_stable, environment=environment, risk=risk
    )
    get_run_logger().info(
        "strategy %s, steps %s, observe %s per stage: %s",
        choice.kind,
        list(choice.steps),
        duration(choice.observe_seconds),
        choice.rationale,
    )
    return choice
