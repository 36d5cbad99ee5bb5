"""Step 3: which strategy carries this release, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from deployflow.spec import CanaryStrategySpec, StrategySpec

StrategyName = Literal["auto", "canary", "direct"]
STRATEGY_CHOICES: tuple[str, ...] = ("auto", "canary", "direct")


@dataclass(frozen=True)
class StrategyChoice:
    """The plan: traffic steps (percent of traffic on the new version) and observe time."""

    kind: Literal["canary", "direct"]
    steps: tuple[int, ...]
    observe_seconds: float
    rationale: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_strategy(
    configured: StrategySpec, override: StrategyName, *, has_stable: bool
) -> StrategyChoice:
    """Pick the strategy from the spec, a per-run override, and whether a stable version runs.

    A first release has nothing to compare a canary with, so it goes direct and relies on
    post-deploy verification.
    """
    if override not in STRATEGY_CHOICES:
        raise ValueError(f"strategy: {override!r} is not allowed; use one of {STRATEGY_CHOICES}")
    if not has_stable:
        return StrategyChoice(
            "direct", (100,), configured.observe, "first release: no stable version to compare"
        )
    kind = configured.kind if override == "auto" else override
    if kind == "canary":
        steps = (
            tuple(configured.steps)
            if isinstance(configured, CanaryStrategySpec)
            else tuple(CanaryStrategySpec(kind="canary").steps)
        )
        why = "from the spec" if override == "auto" else "overridden for this run"
        return StrategyChoice("canary", steps, configured.observe, f"canary {why}")
    why = "from the spec" if override == "auto" else "overridden for this run"
    return StrategyChoice("direct", (100,), configured.observe, f"direct {why}")
