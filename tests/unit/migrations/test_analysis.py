"""Graph, reversibility, unreadable revisions, suppressions, overrides, SQL parsing, CLI input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployflow.migrations import MigrationInputError, MigrationsSpec, check_migrations
from deployflow.migrations.command import main
from deployflow.migrations.operations import is_binary_coercible, parse_sql

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations"
PROJECTS = CORPUS / "projects"


def _rules(report, revision: str | None = None, *, active: bool = True) -> set[str]:
    findings = (
        report.graph_findings
        if revision is None
        else next(r for r in report.revisions if r.revision == revision).findings
    )
    return {f.rule_id for f in findings if f.counts or not active}


def test_several_heads_and_unmerged_branch_point_are_errors() -> None:
    report = check_migrations(PROJECTS / "multiple_heads", from_rev=None)
    assert _rules(report) == {"graph-multiple-heads", "graph-branch-point"}
    assert report.blocking
    assert report.exit_code == 1
    assert report.staging is None


def test_merged_branches_are_not_a_graph_problem() -> None:
    report = check_migrations(PROJECTS / "merged", from_rev=None)
    assert report.graph_findings == []
    assert report.heads == ["mg_d"]
    merge = next(r for r in report.revisions if r.revision == "mg_d")
    assert merge.findings == []
    assert merge.reversibility.startswith("reversible")


def test_gap_in_the_chain_is_an_error() -> None:
    report = check_migrations(PROJECTS / "gap", from_rev=None)
    assert "graph-gap" in _rules(report)
    assert report.blocking


def test_deployed_revision_on_another_branch_is_an_error() -> None:
    report = check_migrations(PROJECTS / "multiple_heads", from_rev="mh_b", to_rev="mh_c")
    assert "graph-not-ancestor" in _rules(report)


def test_range_starts_after_the_deployed_revision() -> None:
    report = check_migrations(PROJECTS / "roundtrip", from_rev="rt_a")
    assert [r.revision for r in report.revisions] == ["rt_b", "rt_c"]
    report = check_migrations(PROJECTS / "roundtrip", from_rev="rt_a", to_rev="rt_b")
    assert [r.revision for r in report.revisions] == ["rt_b"]


def test_reversibility_errors() -> None:
    report = check_migrations(PROJECTS / "downgrades", from_rev="dg_a")
    by_rev = {r.revision: r for r in report.revisions}
    assert "downgrade-empty" in _rules(report, "dg_empty")
    assert "downgrade-missing" in _rules(report, "dg_missing")
    assert "downgrade-irreversible" in _rules(report, "dg_irreversible")
    assert "downgrade-records-nothing" in _rules(report, "dg_nothing")
    assert by_rev["dg_irreversible"].reversibility == "irreversible"
    assert report.exit_code == 1


def test_irreversible_is_accepted_when_the_spec_allows_it() -> None:
    spec = MigrationsSpec(path=PROJECTS / "downgrades", allow_irreversible=True)
    report = check_migrations(
        PROJECTS / "downgrades", from_rev="dg_missing", to_rev="dg_irreversible", settings=spec
    )
    assert "downgrade-irreversible" not in _rules(report, "dg_irreversible")
    assert "allowed" in report.revisions[0].reversibility


def test_data_migration_that_cannot_run_offline_is_an_error_not_a_crash() -> None:
    report = check_migrations(PROJECTS / "data_migration", from_rev="dm_a")
    [revision] = report.revisions
    assert revision.unreadable
    assert "fetchall" in revision.unreadable
    assert "revision-unreadable" in _rules(report, "dm_b")
    assert report.exit_code == 1
    assert "could not be read" in report.to_markdown().lower()


def test_safe_operations_pass_with_default_settings(capsys) -> None:
    code = main([str(PROJECTS / "safe_only"), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["blocking"] is False
    assert report["summary"]["errors"] == 0


def test_bad_input_exits_2_and_names_the_argument(tmp_path, capsys) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert "ALEMBIC_DIR" in capsys.readouterr().err
    assert main([str(PROJECTS / "roundtrip"), "--from", "nope"]) == 2
    err = capsys.readouterr().err
    assert "--from" in err
    assert "rt_a" in err
    assert main([str(PROJECTS / "roundtrip"), "--to", "nope"]) == 2
    assert "--to" in capsys.readouterr().err
    assert main([str(PROJECTS / "roundtrip"), "--format", "xml"]) == 2
    assert "--format" in capsys.readouterr().err
    with pytest.raises(MigrationInputError) as excinfo:
        check_migrations(tmp_path, from_rev=None)
    assert excinfo.value.argument == "ALEMBIC_DIR"


def test_suppression_without_reason_is_an_error_and_does_not_suppress(assemble, tmp_path) -> None:
    source = tmp_path / "rev.py"
    source.write_text(
        (CORPUS / "rules" / "drop-column" / "violating.py")
        .read_text()
        .replace('op.drop_column("users", "legacy_flag")',
                 'op.drop_column("users", "legacy_flag")  # deployflow: allow drop-column\n'
                 '    # deployflow: allow no-such-rule -- typo')
    )  # fmt: skip
    report = check_migrations(assemble(source), from_rev="base0001")
    rules = _rules(report, "r11_bad")
    assert {"drop-column", "suppression-without-reason", "suppression-unknown-rule"} <= rules


def test_severity_overrides_and_off() -> None:
    spec = MigrationsSpec(path=PROJECTS / "safe_only", rules={"missing-lock-timeout": "error"})
    assert check_migrations(PROJECTS / "safe_only", from_rev=None, settings=spec).exit_code == 1
    spec = MigrationsSpec(path=PROJECTS / "downgrades", rules={"downgrade-empty": "off"})
    report = check_migrations(
        PROJECTS / "downgrades", from_rev="dg_a", to_rev="dg_empty", settings=spec
    )
    assert "downgrade-empty" not in _rules(report, "dg_empty", active=False)


def test_lock_timeout_in_env_py_satisfies_the_rule(assemble) -> None:
    violating = CORPUS / "rules" / "missing-lock-timeout" / "violating.py"
    assert check_migrations(assemble(violating), from_rev="base0001").all_findings()
    env = "connection.exec_driver_sql(\"SET lock_timeout = '5s'\")\n"
    report = check_migrations(assemble(violating, env=env), from_rev="base0001")
    assert not [f for f in report.all_findings() if f.counts]


def test_spec_rejects_unknown_rules_and_bad_windows() -> None:
    with pytest.raises(ValidationError, match="unknown rule id"):
        MigrationsSpec(path=Path("x"), rules={"no-such-rule": "off"})
    with pytest.raises(ValidationError, match="later than"):
        MigrationsSpec.model_validate(
            {"path": "x", "downtime_windows": [{"start": "2025-01-02T00:00:00Z",
             "end": "2025-01-01T00:00:00Z", "reason": "r", "approved_by": "a"}]}
        )  # fmt: skip
    with pytest.raises(ValidationError):
        MigrationsSpec.model_validate(
            {"path": "x", "downtime_windows": [{"start": "2025-01-01T00:00:00",
             "end": "2025-01-02T00:00:00", "reason": "r", "approved_by": "a"}]}
        )  # fmt: skip
    assert MigrationsSpec.model_validate({"path": "x", "lock_timeout": "2s"}).lock_timeout == 2.0
    with pytest.raises(ValidationError, match="extra"):
        MigrationsSpec.model_validate({"path": "x", "lock_timeot": "2s"})


@pytest.mark.parametrize(
    ("old", "new", "coercible"),
    [
        ("VARCHAR(100)", "VARCHAR(200)", True),
        ("VARCHAR(200)", "VARCHAR(100)", False),
        ("VARCHAR(100)", "TEXT", True),
        ("TEXT", "VARCHAR", True),
        ("TEXT", "VARCHAR(10)", False),
        ("NUMERIC(10, 2)", "NUMERIC(12, 2)", True),
        ("NUMERIC(10, 2)", "NUMERIC(12, 3)", False),
        ("INTEGER", "BIGINT", False),
        (None, "TEXT", False),
    ],
)
def test_binary_coercible(old, new, coercible) -> None:
    assert is_binary_coercible(old, new) is coercible


def test_raw_sql_is_split_and_classified() -> None:
    ops = parse_sql(
        "SET lock_timeout = '5s'; CREATE INDEX CONCURRENTLY ix ON t (a);"
        " ALTER TABLE t ADD CONSTRAINT c CHECK (a IS NOT NULL) NOT VALID;"
        " ALTER TABLE t VALIDATE CONSTRAINT c; TRUNCATE a, b CASCADE; VACUUM FULL t;"
        " SELECT ';' ; not sql ("
    )
    assert [o.kind for o in ops] == [
        "set_lock_timeout", "create_index", "add_check", "validate_constraint", "truncate",
        "vacuum", "select", "unparseable",
    ]  # fmt: skip
    assert ops[1].concurrently
    assert ops[2].not_valid
    assert ops[2].column == "a"
    assert ops[4].cascade
    assert ops[4].tables == ("a", "b")
    assert ops[5].detail == "full"


def test_markdown_puts_the_summary_first_and_explains_findings(assemble) -> None:
    violating = CORPUS / "rules" / "create-index-non-concurrent" / "violating.py"
    markdown = check_migrations(assemble(violating), from_rev="base0001").to_markdown()
    lines = markdown.splitlines()
    assert lines[0] == "# Migration check"
    assert lines[2].startswith("**Migrations BLOCKED")
    assert "create-index-non-concurrent" in markdown
    assert "Why: A plain CREATE INDEX blocks" in markdown
    assert "Safe alternative: op.create_index(" in markdown
    text = check_migrations(assemble(violating), from_rev="base0001").to_text()
    assert "instead:" in text
