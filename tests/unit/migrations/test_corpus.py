"""Every rule fires on its violating fixture and nothing counts against its safe fixture."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from deployflow.migrations import RULES, check_migrations
from deployflow.migrations.command import add_arguments, run

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations"

pytestmark = pytest.mark.unit

RULE_DIRS = sorted(p for p in (CORPUS / "rules").iterdir() if p.is_dir())
# Rules exercised by the project fixtures (graph, reversibility) or synthetic tests instead.
NOT_IN_RULE_CORPUS = {
    "graph-multiple-heads", "graph-branch-point", "graph-gap", "graph-not-ancestor",
    "downgrade-missing", "downgrade-empty", "downgrade-records-nothing", "downgrade-irreversible",
    "revision-unreadable", "suppression-without-reason", "suppression-unknown-rule",
}  # fmt: skip


def _cli(alembic_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run(
        parser.parse_args([str(alembic_dir), "--from", "base0001", "--format", "json", *extra])
    )
    return code, json.loads(capsys.readouterr().out)


def test_every_lint_rule_has_a_violating_and_a_safe_fixture() -> None:
    lint_rules = set(RULES) - NOT_IN_RULE_CORPUS
    assert len(lint_rules) >= 20
    assert {p.name for p in RULE_DIRS} == lint_rules
    for rule_dir in RULE_DIRS:
        assert (rule_dir / "violating.py").is_file()
        assert (rule_dir / "safe.py").is_file()


@pytest.mark.parametrize("rule_dir", RULE_DIRS, ids=lambda p: p.name)
def test_violating_variant_is_found(rule_dir: Path, assemble, capsys) -> None:
    code, report = _cli(assemble(rule_dir / "violating.py"), capsys)
    [revision] = report["revisions"]
    active = [f for f in revision["findings"] if f["suppressed"] is None]
    found = [f for f in active if f["rule_id"] == rule_dir.name]
    assert found, f"{rule_dir.name} not reported: {active}"
    finding = found[0]
    assert finding["why"]
    assert finding["safe_alternative"]
    assert finding["severity"] == RULES[rule_dir.name].severity
    assert code == (1 if any(f["severity"] == "error" for f in active) else 0)


@pytest.mark.parametrize("rule_dir", RULE_DIRS, ids=lambda p: p.name)
def test_safe_variant_has_no_finding(rule_dir: Path, assemble, capsys) -> None:
    code, report = _cli(assemble(rule_dir / "safe.py"), capsys)
    [revision] = report["revisions"]
    active = [f for f in revision["findings"] if f["suppressed"] is None]
    assert active == []
    assert code == 0
    # Suppressed findings stay visible with their reason.
    for finding in revision["findings"]:
        assert finding["suppressed"]["reason"]


def test_contract_rules_class_the_revision_as_contract(assemble) -> None:
    report = check_migrations(
        assemble(CORPUS / "rules" / "drop-column" / "safe.py"), from_rev="base0001"
    )
    [revision] = report.revisions
    assert revision.compatibility == "contract"
    assert "drops a column" in revision.compatibility_reasons
    assert "later deploy" in revision.deploy_order


def test_expand_revision_is_applied_before_the_code(assemble) -> None:
    report = check_migrations(
        assemble(CORPUS / "rules" / "missing-lock-timeout" / "safe.py"), from_rev="base0001"
    )
    assert report.revisions[0].compatibility == "expand"
    assert "before the new code" in report.revisions[0].deploy_order
