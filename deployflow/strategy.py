"""Step 3: which strategy carries this release, and why."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from deployflow.checks.result import CheckStatus
from deployflow.release import CheckRecord
from deployflow.risk import ChangeSize, RiskAssessment, RiskFacts
from deployflow.spec import (
    AutoStrategySpec,
    BlueGreenStrategySpec,
    CanaryStrategySpec,
    DirectStrategySpec,
    KindName,
    StrategySpec,
)

StrategyName = Literal["auto", "canary", "direct", "blue-green"]
STRATEGY_CHOICES: tuple[str, ...] = ("auto", "canary", "direct", "blue-green")


@dataclass(frozen=True)
class StrategyChoice:
    """The plan: traffic steps (percent of traffic on the new version) and observe time.

    For blue-green, ``observe_seconds`` is green's observation in isolation, ``steps`` is the one
    switch (100) and ``keep_previous_seconds`` how long blue stays warm after it. ``risk`` is the
    risk table the choice was made with (None when it was not assessed).
    """

    kind: Literal["canary", "direct", "blue-green"]
    steps: tuple[int, ...]
    observe_seconds: float
    rationale: str
    risk: RiskAssessment | None = None
    keep_previous_seconds: float = 0.0
    probe_requests: int = 0
    # Manual gates of a canary: (index of the stage a pause follows, its timeout in seconds).
    pauses: tuple[tuple[int, float], ...] = ()

    def pause_after(self, index: int) -> float | None:
        """The timeout of the pause that follows stage ``index``, or None when none does."""
        return next((timeout for at, timeout in self.pauses if at == index), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rationale_dict(self) -> dict[str, Any]:
        """``strategy_rationale`` of reports and ``deploy --json``: the sentence, the factors."""
        risk = self.risk.to_dict() if self.risk else {"score": None, "level": None, "factors": []}
        return {"explanation": self.rationale, **risk}


def _plan(
    kind: KindName, configured: StrategySpec, rationale: str, risk: RiskAssessment | None
) -> StrategyChoice:
    """The plan of ``kind`` with the spec's settings for it (defaults when the spec has none)."""
    canary, direct, blue_green = CanaryStrategySpec(), DirectStrategySpec(), BlueGreenStrategySpec()
    if isinstance(configured, AutoStrategySpec):
        canary, direct, blue_green = configured.canary, configured.direct, configured.blue_green
    elif isinstance(configured, CanaryStrategySpec):
        canary = configured
    elif isinstance(configured, DirectStrategySpec):
        direct = configured
    else:
        blue_green = configured
    if kind == "canary":
        return StrategyChoice(
            "canary",
            tuple(canary.weights),
            canary.observe,
            rationale,
            risk,
            pauses=tuple(canary.pauses),
        )
    if kind == "blue-green":
        return StrategyChoice(
            "blue-green",
            (100,),
            blue_green.observe,
            rationale,
            risk,
            keep_previous_seconds=blue_green.keep_previous,
            probe_requests=blue_green.probe_requests,
        )
    return StrategyChoice("direct", (100,), direct.observe, rationale, risk)


def risk_decides(configured: StrategySpec) -> bool:
    """Whether the release's risk is measured: only when the spec leaves the kind to it
    (``kind: auto``). A fixed kind never reads the table, so its git diff and history query
    are not run (a per-run override or a pin of an auto spec still shows the table)."""
    return isinstance(configured, AutoStrategySpec)


def choose_strategy(
    configured: StrategySpec,
    override: StrategyName,
    *,
    has_stable: bool,
    environment: str = "",
    risk: RiskAssessment | None = None,
) -> StrategyChoice:
    """Pick the strategy from the spec, a per-run override, the measured risk and whether a
    stable version runs.

    Precedence: a first release goes direct (nothing to compare with or switch back to); then the
    run's override; then the spec: a fixed kind, or with ``kind: auto`` the environment's pin,
    else the risk level (low direct, medium canary, high blue-green). Whatever decides, the risk
    table travels with the plan so a reviewer sees what the risk would have said.
    """
    if override not in STRATEGY_CHOICES:
        raise ValueError(f"strategy: {override!r} is not allowed; use one of {STRATEGY_CHOICES}")
    assessed = f" ({risk.explanation()})" if risk is not None else ""
    if not has_stable:
        why = f"direct: first release, no stable version to compare{assessed}"
        return _plan("direct", configured, why, risk)
    if override != "auto":
        return _plan(override, configured, f"{override} overridden for this run{assessed}", risk)
    if not isinstance(configured, AutoStrategySpec):
        kind = configured.kind
        return _plan(kind, configured, f"{kind} from the spec{assessed}", risk)
    pinned = configured.pin.get(environment)
    if pinned is not None:
        return _plan(pinned, configured, f"{pinned} pinned for {environment}{assessed}", risk)
    if risk is None:
        # Fail safe: an unmeasured release is not a low-risk one.
        return _plan("canary", configured, "canary: the risk could not be assessed", None)
    chosen: KindName = "direct"
    if risk.strategy == "canary":
        chosen = "canary"
    elif risk.strategy == "blue-green":
        chosen = "blue-green"
    return _plan(chosen, configured, f"{chosen}: {risk.explanation()}", risk)


FAILED_RESULTS = ("rolled_back", "failed")


def release_risk_facts(
    *,
    change: ChangeSize | str,
    checks: Sequence[CheckRecord],
    recent_results: Sequence[str],
    now: datetime,
) -> RiskFacts:
    """The facts of one release: the measured change (or why it could not be measured), what
    steps 1 and 2 found, and the statuses of the service's recent deploys (newest first)."""
    revisions: tuple[str, ...] = ()
    unsafe: tuple[str, ...] = ()
    for c in checks:
        if c.step == "migrations":
            revisions = tuple(str(r) for r in c.details.get("revisions", ()))
            unsafe = tuple(str(u) for u in c.details.get("unsafe", ()))
    skipped = tuple(
        c.name for c in checks if c.step == "pre_checks" and c.status is CheckStatus.SKIPPED
    )
    return RiskFacts(
        change=change if isinstance(change, ChangeSize) else None,
        change_unknown_reason=change if isinstance(change, str) else "",
        migration_revisions=revisions,
        unsafe_migration_findings=unsafe,
        prechecks_skipped=skipped,
        recent_deploys=len(recent_results),
        recent_failures=sum(1 for r in recent_results if r in FAILED_RESULTS),
        now=now,
    )
