"""Misses and false positives found on real projects: index=True columns, schema-qualified names,
PostgreSQL statements the old parser could not read, renames that are not table renames, safe
type widening, and tables created in the same revision."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from deployflow.migrations import MigrationInputError, check_migrations
from deployflow.migrations.lint import LintState, lint_operations
from deployflow.migrations.operations import Operation, normalise_name, parse_sql

pytestmark = pytest.mark.unit

CORPUS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations"
REVISIONS = CORPUS / "revisions"


def _active(report) -> list[tuple[str, str | None]]:
    return sorted((f.rule_id, f.table) for r in report.revisions for f in r.findings if f.counts)


def test_a_column_added_with_index_or_unique_builds_an_index_under_the_lock(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "index_true.py"), from_rev="base0001")
    assert _active(report) == [
        ("add-unique-constraint", "orders"),
        ("create-index-non-concurrent", "users"),
    ]
    assert report.exit_code == 1


def test_the_same_table_name_in_another_schema_is_another_table(assemble) -> None:
    report = check_migrations(assemble(REVISIONS / "schemas.py"), from_rev="base0001")
    # events.affiliations is created here (exempt); people.affiliations already exists.
    assert _active(report) == [
        ("add-column-not-null-without-default", "people.affiliations"),
        ("drop-column", "people.affiliations"),
    ]


@pytest.mark.parametrize(
    ("name", "normal"),
    [("Users", "users"), ("public.users", "users"), ('"Billing"."Users"', "billing.users"),
     ("billing.users", "billing.users"), (None, None)],
)  # fmt: skip
def test_names_compare_as_postgresql_resolves_them(name, normal) -> None:
    assert normalise_name(name) == normal


def test_valid_postgresql_is_read_and_safe_patterns_have_no_finding() -> None:
    report = check_migrations(CORPUS / "projects" / "raw_sql", from_rev=None)
    assert _active(report) == []
    assert report.exit_code == 0
    kinds = [op["kind"] for op in report.revisions[1].operations]
    assert "unparseable" not in kinds
    assert "rename_table" not in kinds
    assert {"rename_constraint", "rename_index", "set"} <= set(kinds)


def test_statements_are_classified_by_postgresql_parse_trees() -> None:
    ops = parse_sql(
        "ALTER TABLE s.t RENAME CONSTRAINT a TO b; ALTER INDEX s.ix RENAME TO iy;"
        " ALTER TABLE t RENAME TO u; ALTER TABLE t DISABLE TRIGGER ALL;"
        " SET CONSTRAINTS ALL IMMEDIATE; DROP INDEX CONCURRENTLY s.ix;"
        " CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;"
        " ALTER TABLE ONLY s.t ADD COLUMN c int UNIQUE"
    )
    assert [(o.kind, o.table) for o in ops] == [
        ("rename_constraint", "s.t"), ("rename_index", None), ("rename_table", "t"),
        ("other", "t"), ("set", None), ("drop_index", None), ("ddl_object", None),
        ("add_column", "s.t"),
    ]  # fmt: skip
    assert ops[1].constraint == "s.ix"
    assert ops[5].constraint == "s.ix"
    assert ops[5].concurrently
    assert ops[7].unique


def _lint(*ops: Operation, state: LintState | None = None) -> list[str]:
    found = lint_operations(ops, state=state or LintState(), env_sets_lock_timeout=True)
    return [f.rule_id for f in found]


def test_type_changes_in_raw_sql_use_the_type_known_from_earlier_revisions() -> None:
    state = LintState(column_types={("invoices", "amount"): "NUMERIC(11, 2)"})
    [narrow] = parse_sql("ALTER TABLE invoices ALTER COLUMN amount TYPE numeric(8, 2)")
    assert _lint(narrow, state=state) == ["alter-column-type"]
    [using] = parse_sql("ALTER TABLE invoices ALTER COLUMN amount TYPE text USING amount::text")
    assert _lint(using, state=LintState()) == ["alter-column-type"]
    # Never seen: the old type is unknown, so it cannot be called safe.
    [unknown] = parse_sql("ALTER TABLE ledger ALTER COLUMN amount TYPE numeric(12, 2)")
    assert _lint(unknown) == ["alter-column-type"]


def test_dropping_a_column_of_a_table_created_in_the_same_revision_is_safe() -> None:
    ops = parse_sql("CREATE TABLE fresh (id int, draft text); ALTER TABLE fresh DROP COLUMN draft")
    assert _lint(*ops) == []
    assert _lint(*parse_sql("ALTER TABLE users DROP COLUMN draft")) == ["drop-column"]


def test_several_version_folders_are_one_graph_and_round_trip(tmp_path) -> None:
    project = CORPUS / "projects" / "two_folders"
    url = f"sqlite:///{tmp_path / 'staging.db'}"
    report = check_migrations(project / "migrations", from_rev=None, staging_url=url)
    assert [r.revision for r in report.revisions] == ["tf_core", "tf_reports"]
    assert report.graph_findings == []
    assert report.staging is not None
    assert [(leg.name, leg.ok) for leg in report.staging.legs] == [
        ("upgrade", True), ("downgrade", True), ("upgrade again", True),
    ]  # fmt: skip
    assert report.exit_code == 0


def test_a_missing_version_folder_is_bad_input(tmp_path) -> None:
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "alembic.ini").write_text("[alembic]\nversion_locations = gone/versions\n")
    with pytest.raises(MigrationInputError, match="gone/versions") as excinfo:
        check_migrations(tmp_path / "migrations", from_rev=None)
    assert excinfo.value.argument == "alembic.ini"


def test_validating_in_the_transaction_that_added_not_valid_is_found() -> None:
    add, validate = parse_sql(
        "ALTER TABLE orders ADD CONSTRAINT fk_orders_user FOREIGN KEY (user_id)"
        " REFERENCES users (id) NOT VALID; ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_user"
    )
    assert _lint(add, validate) == ["add-foreign-key-without-not-valid"]
    # After a commit (an autocommit block) the ADD's lock is gone: the recipe is safe.
    assert _lint(add, replace(validate, segment=1, in_transaction=False)) == []


def test_a_new_table_referencing_an_existing_one_needs_a_lock_timeout() -> None:
    state = LintState()
    refs = parse_sql("CREATE TABLE tags (id int, item_id int REFERENCES items (id))")
    assert refs[0].tables == ("items",)
    found = lint_operations(refs, state=state, env_sets_lock_timeout=False)
    assert [f.rule_id for f in found] == ["missing-lock-timeout"]
    # Referencing a table created just before it locks nobody out.
    fresh = parse_sql(
        "CREATE TABLE items (id int); CREATE TABLE tags (item_id int REFERENCES items)"
    )
    assert lint_operations(fresh, state=state, env_sets_lock_timeout=False) == []


def test_one_history_per_dialect_reads_the_postgresql_one(tmp_path) -> None:
    # versions/postgresql and versions/sqlite, env.py picking one by dialect.
    for dialect in ("postgresql", "sqlite"):
        shutil.copytree(
            CORPUS / "projects" / "roundtrip" / "versions", tmp_path / "versions" / dialect
        )
    (tmp_path / "versions" / "sqlite" / "a.py").write_text("not a revision (\n")
    report = check_migrations(tmp_path, from_rev=None)
    assert [r.revision for r in report.revisions] == ["rt_a", "rt_b", "rt_c"]
    assert report.graph_findings == []
