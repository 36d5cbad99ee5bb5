"""The progressive rollout of a release's feature flags: which flag, which share, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class FlagStep:
    """One step: ``percent`` of users (by targeting key) get ``flag``."""

    flag: str
    percent: int


def flag_rollout_plan(flags: Sequence[str], steps: Sequence[int]) -> tuple[FlagStep, ...]:
    """Each flag in turn through every step, so a failing step names one flag alone."""
    return tuple(FlagStep(flag, percent) for flag in flags for percent in steps)


@dataclass(frozen=True)
class FlagChangeRecord:
    """A change the release made to a flag, for the summary and ``deploy --json``."""

    flag: str
    percent: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kill_reason(step: FlagStep, why: str) -> str:
    """Why a flag was turned off for everyone."""
    return f"kill switch at {step.percent}%: {why}"
