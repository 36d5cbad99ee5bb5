"""How risky a release is, from facts a reviewer can check, and which strategy that calls for.

``assess_risk`` is a pure function of ``RiskFacts`` (gathered by the flow from git, the migration
check, the pre-checks and the tracking database) and the spec's ``risk`` section. Every factor is
shown with its weight and its contribution, so the score is never a black box: the score is the sum
of the contributions, and two facts set a floor whatever the score (any migration is at least
medium, an unsafe migration finding is high).
"""

from __future__ import annotations

import fnmatch
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, model_validator

from deployflow.processes import allowed_environment
from deployflow.spec_types import StrictModel

Level = Literal["low", "medium", "high"]
LEVELS: tuple[Level, ...] = ("low", "medium", "high")
# The strategy each level calls for.
STRATEGY_FOR_LEVEL: dict[Level, str] = {"low": "direct", "medium": "canary", "high": "blue-green"}

DEFAULT_LOCK_FILES = [
    "uv.lock",
    "poetry.lock",
    "Pipfile.lock",
    "requirements*.txt",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Cargo.lock",
    "go.sum",
    "Gemfile.lock",
]


class RiskWeights(StrictModel):
    """Points per unit of each factor. A factor's contribution is its weight times its units."""

    lines_changed: float = Field(4.0, ge=0, description="Per 100 changed lines (at most 5 units).")
    files_changed: float = Field(2.0, ge=0, description="Per 10 changed files (at most 5 units).")
    unknown_change: float = Field(
        20.0, ge=0, description="When the change cannot be measured (no checkout or no commit)."
    )
    critical_paths: float = Field(
        10.0, ge=0, description="Per changed file matching risk.critical_paths (at most 3)."
    )
    migrations: float = Field(10.0, ge=0, description="When the release has a migration.")
    lock_files: float = Field(15.0, ge=0, description="When a dependency lock file changed.")
    prechecks_skipped: float = Field(
        5.0, ge=0, description="Per pre-deployment check skipped (at most 3)."
    )
    change_failure_rate: float = Field(
        40.0, ge=0, description="Times the share of recent deploys that failed or rolled back."
    )
    freeze: float = Field(50.0, ge=0, description="When now falls in a freeze window.")


class RiskThresholds(StrictModel):
    """Score limits: below ``canary`` goes direct, below ``blue_green`` goes canary."""

    canary: float = Field(20.0, ge=0, description="From this score on, canary.")
    blue_green: float = Field(50.0, ge=0, description="From this score on, blue-green.")

    @model_validator(mode="after")
    def _ordered(self) -> RiskThresholds:
        if self.blue_green <= self.canary:
            raise ValueError(
                f"blue_green ({self.blue_green:g}) must be above canary ({self.canary:g})"
            )
        return self


class FreezeWindow(StrictModel):
    """A period in which releases are riskier (a sale, a holiday, an audit)."""

    name: str = Field(min_length=1, description="Shown in the rationale.")
    start: datetime = Field(description="ISO 8601 with a time zone, e.g. 2026-12-20T00:00:00Z.")
    end: datetime = Field(description="ISO 8601 with a time zone; after start.")

    @model_validator(mode="after")
    def _window(self) -> FreezeWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end need a time zone (e.g. 'Z' or '+01:00')")
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class RiskSpec(StrictModel):
    """How ``--strategy auto`` measures the risk of a release (used when strategy.kind is auto)."""

    critical_paths: list[str] = Field(
        default_factory=list,
        description="Globs of repository paths whose change is risky ('*' also crosses '/').",
    )
    lock_files: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LOCK_FILES),
        description="File-name globs of dependency lock files.",
    )
    history: int = Field(
        10, ge=1, le=1000, description="How many recent deploys the change failure rate covers."
    )
    weights: RiskWeights = Field(default_factory=RiskWeights)
    thresholds: RiskThresholds = Field(default_factory=RiskThresholds)
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)


@dataclass(frozen=True)
class ChangeSize:
    """What ``git diff --numstat`` says between two commits."""

    lines: int
    files: int
    paths: tuple[str, ...]


@dataclass(frozen=True)
class RiskFacts:
    """What is known about a release when its strategy is chosen.

    ``change`` is None when the change could not be measured (no checkout, no deployed commit,
    git failed): that is a risk of its own, never "no change".
    """

    change: ChangeSize | None
    change_unknown_reason: str = ""
    migration_revisions: tuple[str, ...] = ()
    unsafe_migration_findings: tuple[str, ...] = ()
    prechecks_skipped: tuple[str, ...] = ()
    recent_deploys: int = 0
    recent_failures: int = 0
    now: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["now"] = self.now.isoformat() if self.now else None
        return data


@dataclass(frozen=True)
class RiskFactor:
    """One line of the risk table: the fact, its weight, how many units, what it adds."""

    name: str
    fact: str
    weight: float
    units: float
    contribution: float
    floor: Level | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RiskAssessment:
    """The risk table, its score, and the level it maps to."""

    score: float
    level: Level
    factors: tuple[RiskFactor, ...] = field(default_factory=tuple)

    @property
    def strategy(self) -> str:
        return STRATEGY_FOR_LEVEL[self.level]

    def explanation(self) -> str:
        """Why, in the words of the facts that weighed most (floors first)."""
        floors = [f for f in self.factors if f.floor is not None]
        weighed = sorted(
            (f for f in self.factors if f.contribution > 0 and f.floor is None),
            key=lambda f: -f.contribution,
        )
        reasons = [f.fact for f in (*floors, *weighed)][:3]
        because = "; ".join(reasons) if reasons else "no risk factor present"
        return f"risk {self.level} (score {self.score:g}): {because}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "level": self.level,
            "factors": [f.to_dict() for f in self.factors],
        }


def _matches(path: str, patterns: list[str], *, name_only: bool = False) -> bool:
    subject = PurePosixPath(path).name if name_only else path
    return any(fnmatch.fnmatchcase(subject, p) for p in patterns)


def _factor(
    name: str, fact: str, weight: float, units: float, floor: Level | None = None
) -> RiskFactor:
    return RiskFactor(name, fact, weight, round(units, 3), round(weight * units, 2), floor)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def risk_factors(facts: RiskFacts, risk: RiskSpec) -> list[RiskFactor]:
    """Every factor of the table, present or not (a zero row says the fact was looked at)."""
    w = risk.weights
    rows: list[RiskFactor] = []
    change = facts.change
    if change is None:
        why = facts.change_unknown_reason or "the change could not be measured"
        rows.append(_factor("unknown_change", why, w.unknown_change, 1))
        paths: tuple[str, ...] = ()
    else:
        rows.append(
            _factor(
                "lines_changed",
                f"{_plural(change.lines, 'line')} changed",
                w.lines_changed,
                min(change.lines / 100, 5.0),
            )
        )
        rows.append(
            _factor(
                "files_changed",
                f"{_plural(change.files, 'file')} changed",
                w.files_changed,
                min(change.files / 10, 5.0),
            )
        )
        paths = change.paths
    critical = [p for p in paths if _matches(p, risk.critical_paths)]
    rows.append(
        _factor(
            "critical_paths",
            f"critical paths changed: {', '.join(critical[:3])}"
            + (f" and {len(critical) - 3} more" if len(critical) > 3 else "")
            if critical
            else "no critical path changed",
            w.critical_paths,
            min(len(critical), 3),
        )
    )
    locks = [p for p in paths if _matches(p, risk.lock_files, name_only=True)]
    rows.append(
        _factor(
            "lock_files",
            f"dependency lock files changed: {', '.join(locks[:3])}"
            if locks
            else "no lock file changed",
            w.lock_files,
            1 if locks else 0,
        )
    )
    if facts.unsafe_migration_findings:
        rows.append(
            _factor(
                "migrations",
                f"unsafe migration: {facts.unsafe_migration_findings[0]}",
                w.migrations,
                1,
                floor="high",
            )
        )
    elif facts.migration_revisions:
        rows.append(
            _factor(
                "migrations",
                f"migration {', '.join(facts.migration_revisions[:3])}",
                w.migrations,
                1,
                floor="medium",
            )
        )
    else:
        rows.append(_factor("migrations", "no migration", w.migrations, 0))
    skipped = facts.prechecks_skipped
    rows.append(
        _factor(
            "prechecks_skipped",
            f"pre-checks skipped: {', '.join(skipped)}" if skipped else "no pre-check skipped",
            w.prechecks_skipped,
            min(len(skipped), 3),
        )
    )
    if facts.recent_deploys:
        rate = facts.recent_failures / facts.recent_deploys
        fact = f"{facts.recent_failures} of the last {facts.recent_deploys} deploys failed"
    else:
        rate, fact = 0.0, "no earlier deploy to judge the change failure rate by"
    rows.append(_factor("change_failure_rate", fact, w.change_failure_rate, rate))
    frozen = [
        f for f in risk.freeze_windows if facts.now is not None and f.start <= facts.now < f.end
    ]
    rows.append(
        _factor(
            "freeze",
            f"inside the freeze window {frozen[0].name!r}" if frozen else "no freeze window",
            w.freeze,
            1 if frozen else 0,
        )
    )
    return rows


def level_for(score: float, risk: RiskSpec) -> Level:
    t = risk.thresholds
    if score >= t.blue_green:
        return "high"
    if score >= t.canary:
        return "medium"
    return "low"


def assess_risk(facts: RiskFacts, risk: RiskSpec) -> RiskAssessment:
    """The risk table of a release, its score and its level (the higher of score and floors)."""
    factors = tuple(risk_factors(facts, risk))
    score = round(sum(f.contribution for f in factors), 2)
    level = level_for(score, risk)
    for f in factors:
        if f.floor is not None and LEVELS.index(f.floor) > LEVELS.index(level):
            level = f.floor
    return RiskAssessment(score, level, factors)


def measure_change(checkout: Path, old: str, new: str, timeout: float = 20.0) -> ChangeSize | str:
    """Lines and files changed from ``old`` to ``new`` in the git ``checkout`` (binary files count
    as changed files with no lines); a string saying why when git cannot tell."""
    for ref in (old, new):
        if not ref or ref.startswith("-"):
            return f"not a commit: {ref!r}"
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "diff", "--numstat", "--no-renames", old, new, "--"],
            env=allowed_environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"git diff could not run: {exc}"
    if done.returncode != 0:
        return f"git diff {old[:12]}..{new[:12]} failed: {done.stderr.strip()[:200]}"
    lines, paths = 0, []
    for row in done.stdout.splitlines():
        added, removed, path = [*row.split("\t", 2), "", "", ""][:3]
        if not path:
            continue
        paths.append(path)
        lines += sum(int(n) for n in (added, removed) if n.isdigit())
    return ChangeSize(lines, len(paths), tuple(paths))
