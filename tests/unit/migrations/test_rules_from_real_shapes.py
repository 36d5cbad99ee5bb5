"""Rules on the shapes real revisions take: SQL run through the bind, the value of lock_timeout,
identity USING casts and widening, temporary tables, a NOT NULL default dropped later in the range.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.migrations import check_migrations

pytestmark = pytest.mark.unit

HEADER = """import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None

"""


def _write(tmp_path: Path, revision: str, down: str, body: str) -> Path:
    path = tmp_path / "sources" / f"{revision}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(HEADER.format(revision=revision, down=down) + body)
    return path


def _rules(report, revision: str) -> list[str]:
    [found] = [r for r in report.revisions if r.revision == revision]
    return sorted(f.rule_id for f in found.findings if f.counts)


def test_sql_through_the_bind_is_linted_like_op_execute(assemble, tmp_path) -> None:
    # The shape of data-minded revisions: a connection from op.get_bind(), text() statements.
    path = _write(
        tmp_path,
        "bind_sql",
        "base0001",
        """
def upgrade():
    op.execute("SET lock_timeout = '5s'")
    conn = op.get_bind()
    conn.execute(sa.text("CREATE INDEX ix_orders_created ON orders (created_at)"))
    conn.execute(sa.text("ALTER TABLE users ALTER COLUMN email SET NOT NULL"))


def downgrade():
    op.drop_index("ix_orders_created", table_name="orders")
""",
    )
    report = check_migrations(assemble(path), from_rev="base0001")
    assert _rules(report, "bind_sql") == ["create-index-non-concurrent", "set-not-null"]
    [revision] = report.revisions
    lines = {f.rule_id: f.line for f in revision.findings}
    assert lines == {"create-index-non-concurrent": 13, "set-not-null": 14}
    assert revision.compatibility == "contract"  # SET NOT NULL: the old code may insert NULLs


def test_a_lock_timeout_of_zero_is_no_timeout(assemble, tmp_path) -> None:
    path = _write(
        tmp_path,
        "zero_timeout",
        "base0001",
        """
def upgrade():
    op.execute("SET lock_timeout TO 0")
    op.add_column("users", sa.Column("phone", sa.String(30), nullable=True))


def downgrade():
    op.drop_column("users", "phone")
""",
    )
    report = check_migrations(assemble(path), from_rev="base0001")
    assert _rules(report, "zero_timeout") == ["lock-timeout-value", "missing-lock-timeout"]


def test_identity_casts_and_widening_are_not_rewrites(assemble, tmp_path) -> None:
    create = _write(
        tmp_path,
        "invoices",
        "base0001",
        """
def upgrade():
    op.create_table(
        "invoices",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("amount", sa.Numeric(10, 2)),
        sa.Column("cents", sa.Numeric(10)),
    )


def downgrade():
    op.drop_table("invoices")
""",
    )
    widen = _write(
        tmp_path,
        "widen",
        "invoices",
        """
def upgrade():
    op.execute("SET lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE invoices ALTER COLUMN amount TYPE numeric(14, 2) USING amount::numeric(14, 2)"
    )
    op.execute("ALTER TABLE invoices ALTER COLUMN cents TYPE numeric(12)")
    op.alter_column(
        "users", "email", type_=sa.String(320), existing_type=sa.String(200),
        postgresql_using="email::varchar(320)",
    )


def downgrade():
    op.alter_column("users", "email", type_=sa.String(200), existing_type=sa.String(320))
""",
    )
    report = check_migrations(assemble(create, widen), from_rev="base0001")
    assert _rules(report, "widen") == []
    # A USING that converts the values is a rewrite, whatever the types.
    convert = _write(
        tmp_path,
        "convert",
        "invoices",
        """
def upgrade():
    op.execute("SET lock_timeout = '5s'")
    op.execute(
        "ALTER TABLE invoices ALTER COLUMN amount TYPE numeric(14, 2) USING amount * 100"
    )


def downgrade():
    pass
""",
    )
    report = check_migrations(assemble(create, convert), from_rev="base0001")
    assert "alter-column-type" in _rules(report, "convert")


def test_ddl_on_a_temporary_table_of_the_revision_locks_no_shared_table(assemble, tmp_path) -> None:
    # A data migration's scratch table: created, indexed, altered, filled and dropped.
    path = _write(
        tmp_path,
        "scratch",
        "base0001",
        """
def upgrade():
    op.execute("CREATE TEMP TABLE stale_users AS SELECT id FROM users WHERE status = 'stale'")
    op.execute("CREATE INDEX ON stale_users (id)")
    op.execute("ALTER TABLE stale_users ADD COLUMN done boolean")
    op.execute("UPDATE stale_users SET done = true")
    op.execute("DROP TABLE stale_users")


def downgrade():
    pass
""",
    )
    report = check_migrations(assemble(path), from_rev="base0001")
    assert _rules(report, "scratch") == ["downgrade-empty"]  # no lock rule
    # The same DDL on the shared table is reported.
    path = _write(
        tmp_path,
        "shared",
        "base0001",
        """
def upgrade():
    op.execute("CREATE INDEX ON users (status)")


def downgrade():
    pass
""",
    )
    report = check_migrations(assemble(path), from_rev="base0001")
    assert _rules(report, "shared") == [
        "create-index-non-concurrent", "downgrade-empty", "missing-lock-timeout"
    ]  # fmt: skip


def test_a_not_null_default_dropped_by_a_later_revision_of_the_range(assemble, tmp_path) -> None:
    add = _write(
        tmp_path,
        "add_flag",
        "base0001",
        """
def upgrade():
    op.execute("SET lock_timeout = '5s'")
    op.add_column(
        "users", sa.Column("verified", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade():
    op.drop_column("users", "verified")
""",
    )
    drop = _write(
        tmp_path,
        "drop_default",
        "add_flag",
        """
def upgrade():
    op.execute("SET lock_timeout = '5s'")
    op.execute("ALTER TABLE users ALTER COLUMN verified DROP DEFAULT")


def downgrade():
    op.alter_column("users", "verified", server_default=sa.false())
""",
    )
    report = check_migrations(assemble(add, drop), from_rev="base0001")
    assert _rules(report, "add_flag") == []
    assert _rules(report, "drop_default") == ["not-null-default-dropped"]
    [dropped] = [r for r in report.revisions if r.revision == "drop_default"]
    assert dropped.compatibility == "contract"
    # Once the column was added in an earlier release (out of the range), dropping is fine.
    report = check_migrations(assemble(add, drop), from_rev="add_flag")
    assert _rules(report, "drop_default") == []
