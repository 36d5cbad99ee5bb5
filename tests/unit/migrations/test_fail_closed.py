"""A revision that cannot be read blocks the deploy unless accepted with a reason; a revision's
output, exit() and endless loops stay inside its own capture."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from deployflow.migrations import (
    MigrationInputError,
    MigrationsSpec,
    capture_script,
    check_migrations,
    staging_script,
)
from deployflow.migrations.command import main

pytestmark = pytest.mark.unit

REVISIONS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "revisions"


def _active(report) -> dict[str, list]:
    [revision] = report.revisions
    found: dict[str, list] = {}
    for finding in revision.findings:
        if finding.counts:
            found.setdefault(finding.rule_id, []).append(finding)
    return found


def test_a_revision_that_cannot_be_imported_is_an_error(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "import_error.py"), from_rev="base0001")
    found = _active(report)
    assert "revision-unreadable" in found
    assert "ledgerapp" in found["revision-unreadable"][0].message
    assert found["revision-unreadable"][0].severity == "error"
    assert report.exit_code == 1
    [revision] = report.revisions
    assert revision.reversibility.startswith("unknown")
    assert "reversible" not in revision.reversibility.replace("unknown", "")
    assert report.to_dict()["summary"]["unreadable"] == ["ux_import"]


def test_a_reasoned_comment_accepts_an_unreadable_revision(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "import_error_allowed.py"), from_rev="base0001")
    [revision] = report.revisions
    [finding] = [f for f in revision.findings if f.rule_id == "revision-unreadable"]
    assert finding.suppressed_reason == "reviewed in PR 812: renames labels only"
    assert report.exit_code == 0


def test_a_comment_without_a_reason_accepts_nothing(assemble) -> None:
    report = check_migrations(
        assemble(REVISIONS / "import_error_no_reason.py"), from_rev="base0001"
    )
    assert {"revision-unreadable", "suppression-without-reason"} <= set(_active(report))
    assert report.exit_code == 1


def test_the_spec_accepts_an_unreadable_revision_with_a_reason(assemble) -> None:
    alembic_dir = assemble(REVISIONS / "import_error.py")
    spec = MigrationsSpec(path=alembic_dir, unreadable={"ux_import": "checked on staging"})
    report = check_migrations(alembic_dir, from_rev="base0001", settings=spec)
    assert "revision-unreadable" not in _active(report)
    assert report.exit_code == 0
    with pytest.raises(ValidationError, match="no reason given for ux_import"):
        MigrationsSpec(path=alembic_dir, unreadable={"ux_import": "  "})
    spec = MigrationsSpec(path=alembic_dir, unreadable={"ux_typo": "reviewed"})
    with pytest.raises(MigrationInputError, match="ux_typo") as excinfo:
        check_migrations(alembic_dir, from_rev="base0001", settings=spec)
    assert excinfo.value.argument == "migrations.unreadable"


def test_a_runtime_error_is_an_error_and_what_ran_before_it_is_still_checked(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "runtime_error.py"), from_rev="base0001")
    found = _active(report)
    assert "production database" in found["revision-unreadable"][0].message
    assert "after that point" in found["revision-unreadable"][0].message
    [revision] = report.revisions
    assert [op["kind"] for op in revision.operations] == ["set_lock_timeout", "add_column"]


def test_exit_in_a_revision_is_a_finding_and_its_output_stays_out_of_the_json(
    assemble, capsys
) -> None:
    code = main([str(assemble(REVISIONS / "exits.py")), "--from", "base0001", "--format", "json"])
    out = capsys.readouterr().out
    report = json.loads(out)  # nothing the revision printed is mixed into the report
    assert code == 1
    [revision] = report["revisions"]
    [finding] = [f for f in revision["findings"] if f["rule_id"] == "revision-unreadable"]
    assert "SystemExit(0)" in finding["message"]
    assert "progress: starting" in revision["output"]
    assert "progress: to stderr" in revision["output"]


def test_prints_of_a_safe_revision_do_not_corrupt_the_json(assemble, capsys) -> None:
    code = main([str(assemble(REVISIONS / "prints.py")), "--from", "base0001", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert "loading revision" in report["revisions"][0]["output"]


def test_a_revision_past_its_time_limit_is_a_finding(assemble) -> None:
    alembic_dir = assemble(REVISIONS / "loops.py", REVISIONS / "prints.py")
    report = check_migrations(alembic_dir, from_rev="base0001", revision_timeout=0.5)
    by_rev = {r.revision: r for r in report.revisions}
    assert "timed out after 0.5s" in (by_rev["ux_loop"].unreadable or "")
    assert report.exit_code == 1
    # The check goes on with the next revision after the one that timed out.
    assert by_rev["ux_prints"].unreadable is None
    assert by_rev["ux_prints"].operations


def test_a_downgrade_that_raises_on_purpose_is_irreversible(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "downgrade_raises.py"), from_rev="base0001")
    found = _active(report)
    assert "RuntimeError" in found["downgrade-irreversible"][0].message
    assert report.revisions[0].reversibility == "irreversible"
    # An explicit raise is a refusal like NotImplementedError: allow_irreversible accepts it.
    spec = MigrationsSpec(path=Path("x"), allow_irreversible=True)
    report = check_migrations(
        assemble(REVISIONS / "downgrade_raises.py"), from_rev="base0001", settings=spec
    )
    assert "downgrade-irreversible" not in _active(report)
    assert report.revisions[0].reversibility == "irreversible (allowed by the spec)"


def test_a_downgrade_that_only_cannot_run_offline_is_unknown_not_irreversible(assemble) -> None:
    # Offline the bind returns no rows (AttributeError inside the revision, but no `raise`):
    # that says nothing about the downgrade online.
    report = check_migrations(
        assemble(REVISIONS / "downgrade_offline_only.py"), from_rev="base0001"
    )
    [revision] = report.revisions
    assert revision.reversibility.startswith("unknown (downgrade() could not run offline")
    assert "AttributeError" in revision.reversibility
    assert "downgrade-irreversible" not in _active(report)
    assert revision.compatibility == "expand"  # the upgrade was read fully
    assert report.exit_code == 0


def test_an_accepted_unreadable_revision_is_not_blocked_again_as_irreversible(assemble) -> None:
    alembic_dir = assemble(REVISIONS / "import_error.py")
    spec = MigrationsSpec(path=alembic_dir, unreadable={"ux_import": "reviewed in PR 9"})
    report = check_migrations(alembic_dir, from_rev="base0001", settings=spec)
    [revision] = report.revisions
    assert [f.rule_id for f in revision.findings if f.counts] == []
    assert revision.compatibility == "unknown"
    assert revision.reversibility.startswith("unknown")
    assert report.exit_code == 0


@pytest.mark.parametrize("script", [capture_script, staging_script])
def test_the_scripts_need_nothing_from_deployflow(script) -> None:
    # They run under the service's interpreter, where deployflow is not installed.
    tree = ast.parse(Path(script.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported
    assert not [name for name in imported if name.split(".")[0] == "deployflow"]
    # `from sqlalchemy.engine import make_url` needs SQLAlchemy 1.4; services run 1.3 too.
    assert "sqlalchemy.engine" not in imported


def test_bad_python_and_timeout_arguments_exit_2(tmp_path, capsys) -> None:
    project = str(REVISIONS.parent / "projects" / "roundtrip")
    assert main([project, "--python", str(tmp_path / "no-python")]) == 2
    assert "--python" in capsys.readouterr().err
    assert main([project, "--revision-timeout", "0"]) == 2
    assert "--revision-timeout" in capsys.readouterr().err


def test_revisions_that_cannot_be_called_are_rendered_through_env_py(tmp_path) -> None:
    project = REVISIONS.parent / "projects" / "env_fallback"
    report = check_migrations(project, from_rev=None)
    by_rev = {r.revision: r for r in report.revisions}
    assert all(r.unreadable is None for r in report.revisions)
    assert "engine_name" in (by_rev["ef_a"].read_via or "")
    assert by_rev["ef_a"].reversibility == "reversible"
    # What the SQL says is linted: the drop, the CONCURRENTLY index outside the transaction.
    assert [f.rule_id for f in by_rev["ef_b"].findings] == ["drop-column"]
    kinds = {op["kind"]: op["in_transaction"] for op in by_rev["ef_b"].operations}
    assert kinds["create_index"] is False
    # Without env.py there is nothing to fall back on: unreadable, an error.
    shutil.copytree(project / "versions", tmp_path / "versions")
    report = check_migrations(tmp_path, from_rev=None)
    assert [r.revision for r in report.revisions if r.unreadable] == ["ef_a", "ef_b"]
    assert report.exit_code == 1


def test_the_offline_bind_has_a_postgresql_url_and_commit_ends_a_transaction(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "bind_commit.py"), from_rev="base0001")
    [revision] = report.revisions
    assert revision.unreadable is None
    assert [op["kind"] for op in revision.operations] == [
        "set_lock_timeout",
        "add_column",
        "update",
    ]
    # The backfill runs after the commit, not in the DDL's transaction.
    assert _active(report) == {}


def test_a_file_that_is_not_a_readable_revision_is_an_error_unless_accepted(assemble) -> None:
    alembic_dir = assemble(REVISIONS / "prints.py")
    (alembic_dir / "versions" / "half_written.py").write_text("def upgrade(:\n")
    report = check_migrations(alembic_dir, from_rev="base0001")
    [finding] = [f for f in report.graph_findings if f.rule_id == "revision-unreadable"]
    assert "half_written.py" in finding.message
    assert report.exit_code == 1
    spec = MigrationsSpec(path=alembic_dir, unreadable={"half_written.py": "a draft, not shipped"})
    report = check_migrations(alembic_dir, from_rev="base0001", settings=spec)
    assert report.exit_code == 0
    with pytest.raises(ValidationError, match="python"):
        MigrationsSpec(path=alembic_dir, python="")


def test_the_spec_interpreter_must_exist() -> None:
    project = REVISIONS.parent / "projects" / "service_app" / "migrations"
    spec = MigrationsSpec(path=project, python=".venv/bin/no-such-python")
    with pytest.raises(MigrationInputError, match="no-such-python") as excinfo:
        check_migrations(project, from_rev=None, settings=spec)
    assert excinfo.value.argument == "migrations.python"


def test_a_revision_consulting_alembic_context_is_read_directly(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "offline_guard.py"), from_rev="base0001")
    [revision] = report.revisions
    assert revision.unreadable is None
    assert revision.read_via is None
    assert set(_active(report)) == {"set-not-null"}
