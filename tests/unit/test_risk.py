"""The risk table and the strategy it picks: pure functions on crafted facts."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployflow.checks.result import CheckStatus
from deployflow.notify.report import deploy_summary
from deployflow.release import CheckRecord, ReleaseOutcome
from deployflow.risk import ChangeSize, RiskFacts, RiskSpec, assess_risk, measure_change
from deployflow.spec import (
    AutoStrategySpec,
    BlueGreenStrategySpec,
    CanaryStrategySpec,
    DirectStrategySpec,
    SpecError,
    parse_spec,
)
from deployflow.strategy import choose_strategy, release_risk_facts, risk_decides
from deployflow.tracking.ledger import Ledger
from tests.samples import record_in, spec_data

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SMALL = ChangeSize(lines=10, files=1, paths=("docs/index.md",))
SPEC = RiskSpec(critical_paths=["src/payments/*", "migrations/*"])


def facts(**changes: object) -> RiskFacts:
    base: dict[str, object] = {"change": SMALL, "now": NOW}
    return RiskFacts(**{**base, **changes})  # type: ignore[arg-type]


def contribution(assessment, name: str) -> float:
    return next(f.contribution for f in assessment.factors if f.name == name)


def test_a_small_docs_change_with_a_clean_history_is_low_risk() -> None:
    a = assess_risk(facts(), SPEC)
    assert a.level == "low"
    assert a.strategy == "direct"
    assert a.score == pytest.approx(0.4 + 0.2)  # 10 lines x 4/100, 1 file x 2/10
    assert a.score == pytest.approx(sum(f.contribution for f in a.factors))


def test_change_size_adds_by_its_weight_and_is_capped() -> None:
    big = assess_risk(facts(change=ChangeSize(300, 30, ())), SPEC)
    assert contribution(big, "lines_changed") == 12.0  # 3 units of 100 lines x 4
    assert contribution(big, "files_changed") == 6.0  # 3 units of 10 files x 2
    huge = assess_risk(facts(change=ChangeSize(100_000, 5000, ())), SPEC)
    assert contribution(huge, "lines_changed") == 20.0
    assert contribution(huge, "files_changed") == 10.0


def test_an_unmeasured_change_is_not_a_small_one() -> None:
    a = assess_risk(facts(change=None, change_unknown_reason="no deployed commit"), SPEC)
    assert contribution(a, "unknown_change") == 20.0
    assert a.level == "medium"
    assert "no deployed commit" in a.explanation()


def test_critical_paths_and_lock_files_weigh_in() -> None:
    paths = ("src/payments/charge.py", "src/payments/refund/api.py", "README.md", "app/uv.lock")
    a = assess_risk(facts(change=ChangeSize(20, 4, paths)), SPEC)
    assert contribution(a, "critical_paths") == 20.0  # two matches x 10
    assert contribution(a, "lock_files") == 15.0
    assert "src/payments/charge.py" in next(f.fact for f in a.factors if f.name == "critical_paths")


def test_any_migration_is_at_least_medium_and_an_unsafe_one_is_high() -> None:
    medium = assess_risk(facts(migration_revisions=("0042",)), SPEC)
    assert medium.score < SPEC.thresholds.canary
    assert medium.level == "medium"
    high = assess_risk(
        facts(migration_revisions=("0042",), unsafe_migration_findings=("0042 drops a column",)),
        SPEC,
    )
    assert high.level == "high"
    assert high.explanation().startswith("risk high")
    assert "0042 drops a column" in high.explanation()


def test_change_failure_rate_skipped_prechecks_and_freeze_windows() -> None:
    a = assess_risk(facts(recent_deploys=5, recent_failures=2), SPEC)
    assert contribution(a, "change_failure_rate") == 16.0  # 2/5 x 40
    assert "2 of the last 5 deploys failed" in a.explanation()
    skipped = assess_risk(facts(prechecks_skipped=("tests", "lint", "types", "build")), SPEC)
    assert contribution(skipped, "prechecks_skipped") == 15.0  # capped at 3 x 5
    window = {"name": "sale", "start": NOW - timedelta(hours=1), "end": NOW + timedelta(hours=1)}
    frozen = RiskSpec(freeze_windows=[window])  # type: ignore[list-item]
    assert assess_risk(facts(), frozen).level == "high"
    assert assess_risk(facts(now=NOW + timedelta(hours=2)), frozen).level == "low"


def test_thresholds_map_the_score_to_a_level() -> None:
    spec = RiskSpec(thresholds={"canary": 5, "blue_green": 12})  # type: ignore[arg-type]
    assert assess_risk(facts(change=ChangeSize(100, 0, ())), spec).level == "low"  # 4
    assert assess_risk(facts(change=ChangeSize(200, 0, ())), spec).level == "medium"  # 8
    assert assess_risk(facts(change=ChangeSize(300, 0, ())), spec).level == "high"  # 12


def test_auto_follows_the_risk_unless_pinned_or_overridden() -> None:
    auto = AutoStrategySpec(pin={"production": "blue-green"})
    low = assess_risk(facts(), SPEC)
    high = assess_risk(facts(unsafe_migration_findings=("0042 drops a column",)), SPEC)
    assert choose_strategy(auto, "auto", has_stable=True, risk=low).kind == "direct"
    medium = assess_risk(facts(change=None), SPEC)
    canary = choose_strategy(auto, "auto", has_stable=True, risk=medium)
    assert (canary.kind, canary.steps) == ("canary", (5, 25, 50, 100))
    green = choose_strategy(auto, "auto", has_stable=True, risk=high)
    assert green.kind == "blue-green"
    assert green.keep_previous_seconds == 600.0
    assert green.rationale.startswith("blue-green: risk high")
    pinned = choose_strategy(auto, "auto", has_stable=True, environment="production", risk=low)
    assert pinned.kind == "blue-green"
    assert "pinned for production" in pinned.rationale
    assert "risk low" in pinned.rationale  # the reviewer still sees what the risk said
    assert choose_strategy(auto, "canary", has_stable=True, risk=high).kind == "canary"
    assert choose_strategy(auto, "auto", has_stable=False, risk=high).kind == "direct"


def test_auto_without_an_assessment_fails_safe_to_canary() -> None:
    choice = choose_strategy(AutoStrategySpec(), "auto", has_stable=True, risk=None)
    assert choice.kind == "canary"


def test_a_fixed_kind_in_the_spec_wins_and_shows_the_risk() -> None:
    high = assess_risk(facts(unsafe_migration_findings=("x",)), SPEC)
    choice = choose_strategy(CanaryStrategySpec(), "auto", has_stable=True, risk=high)
    assert choice.kind == "canary"
    assert choice.rationale_dict()["level"] == "high"
    assert {f["name"] for f in choice.rationale_dict()["factors"]} >= {"migrations", "freeze"}


def test_the_risk_is_measured_only_when_the_spec_leaves_the_kind_to_it() -> None:
    assert risk_decides(AutoStrategySpec(pin={"production": "canary"}))
    fixed = (CanaryStrategySpec(), DirectStrategySpec(), BlueGreenStrategySpec())
    assert not any(risk_decides(kind) for kind in fixed)
    # A fixed kind without a table says so, rather than an empty risk.
    choice = choose_strategy(BlueGreenStrategySpec(), "auto", has_stable=True, risk=None)
    assert choice.kind == "blue-green"
    assert choice.rationale == "blue-green from the spec"
    assert choice.rationale_dict() == {
        "explanation": "blue-green from the spec",
        "score": None,
        "level": None,
        "factors": [],
    }


def test_release_facts_come_from_the_checks_and_the_history() -> None:
    checks = [
        CheckRecord.skipped("pre_checks", "lint", "not configured"),
        CheckRecord("pre_checks", "tests", CheckStatus.PASSED, "ok"),
        CheckRecord(
            "migrations",
            "migrations",
            CheckStatus.PASSED,
            "safe",
            details={"revisions": ["0042"], "unsafe": ["0042 drop-column: drops users.age"]},
        ),
    ]
    f = release_risk_facts(
        change="no checkout",
        checks=checks,
        recent_results=["succeeded", "rolled_back", "failed", "succeeded"],
        now=NOW,
    )
    assert f.change is None
    assert f.change_unknown_reason == "no checkout"
    assert f.prechecks_skipped == ("lint",)
    assert f.migration_revisions == ("0042",)
    assert (f.recent_deploys, f.recent_failures) == (4, 2)


def test_the_factor_table_reaches_the_summary_and_the_json(tmp_path) -> None:
    choice = choose_strategy(
        AutoStrategySpec(),
        "auto",
        has_stable=True,
        risk=assess_risk(facts(recent_deploys=5, recent_failures=2), SPEC),
    )
    outcome = ReleaseOutcome("shop", "prod", "v2", strategy=choice.kind)
    outcome.strategy_rationale, outcome.strategy_factors = choice.rationale, choice.rationale_dict()
    data = outcome.to_dict()["strategy_rationale"]
    assert data["explanation"] == choice.rationale
    cfr = next(f for f in data["factors"] if f["name"] == "change_failure_rate")
    assert (cfr["weight"], cfr["units"], cfr["contribution"]) == (40.0, 0.4, 16.0)
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    assert "| change_failure_rate | 2 of the last 5 deploys failed | 40 | 0.4 | 16 |" in (
        deploy_summary(record_in(ledger, outcome))
    )


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_measure_change_counts_lines_and_files_between_two_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.test")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "a.py").write_text("one\ntwo\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "first")
    old = git(tmp_path, "rev-parse", "HEAD")
    (tmp_path / "a.py").write_text("one\nTWO\nthree\n")
    (tmp_path / "uv.lock").write_text("x\n")
    (tmp_path / "b.bin").write_bytes(b"\0\1\2")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "second")
    change = measure_change(tmp_path, old, "HEAD")
    assert isinstance(change, ChangeSize)
    assert change.lines == 4  # a.py: 2 added, 1 removed; uv.lock: 1 added; b.bin: binary
    assert set(change.paths) == {"a.py", "uv.lock", "b.bin"}
    assert "failed" in str(measure_change(tmp_path, "0" * 40, "HEAD"))
    assert "not a commit" in str(measure_change(tmp_path, "--output=x", "HEAD"))


def test_the_spec_refuses_bad_risk_and_strategy_settings() -> None:
    with pytest.raises(SpecError) as bad:
        parse_spec(
            spec_data(
                risk={
                    "thresholds": {"canary": 50, "blue_green": 20},
                    "freeze_windows": [
                        {"name": "sale", "start": "2026-12-01T00:00", "end": "2026-12-02T00:00"}
                    ],
                },
                strategy={"kind": "auto", "pin": {"production": "linear"}},
            )
        )
    text = str(bad.value)
    assert "risk.thresholds: blue_green (20) must be above canary (50)" in text
    assert "risk.freeze_windows.0: start and end need a time zone" in text
    assert "strategy.auto.pin.production" in text
    spec = parse_spec(
        spec_data(
            strategy={"kind": "auto", "blue_green": {"keep_previous": "2m"}},
            risk={"critical_paths": ["src/payments/*"]},
        )
    )
    assert isinstance(spec.strategy, AutoStrategySpec)
    assert spec.strategy.blue_green.keep_previous == 120.0


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def test_auto_picks_each_strategy_on_crafted_repositories(tmp_path: Path) -> None:
    """A docs-only change goes direct, a normal change (code and a lock file) canary, a change
    with an unsafe migration blue-green: measured with git, as the flow does."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.test")
    git(tmp_path, "config", "user.name", "t")
    deployed = commit(tmp_path, {"README.md": "shop\n", "app/main.py": "x = 1\n"}, "v1")
    docs = commit(tmp_path, {"README.md": "shop\n\nHow to run it.\n"}, "docs")
    code = {f"app/module_{i}.py": "value = 1\n" * 30 for i in range(12)}
    normal = commit(tmp_path, {**code, "uv.lock": "pinned\n"}, "feature")
    unsafe = CheckRecord(
        "migrations",
        "migrations",
        CheckStatus.PASSED,
        "safe",
        details={"revisions": ["0042"], "unsafe": ["0042 drop-column: drops users.age"]},
    )
    auto = AutoStrategySpec()

    def choose(new: str, checks: list[CheckRecord]) -> str:
        facts = release_risk_facts(
            change=measure_change(tmp_path, deployed, new),
            checks=checks,
            recent_results=["succeeded"] * 5,
            now=NOW,
        )
        return choose_strategy(
            auto, "auto", has_stable=True, risk=assess_risk(facts, SPEC)
        ).rationale

    assert choose(docs, []).startswith("direct: risk low")
    assert choose(normal, []).startswith("canary: risk medium")
    assert "dependency lock files changed: uv.lock" in choose(normal, [])
    assert choose(docs, [unsafe]).startswith(
        "blue-green: risk high (score 10.28): unsafe migration: 0042 drop-column: drops users.age"
    )
