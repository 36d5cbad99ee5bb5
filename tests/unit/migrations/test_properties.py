"""Property tests: random operation sequences and random SQL never crash the analysis."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployflow.migrations import check_migrations
from deployflow.migrations.operations import parse_sql

pytestmark = pytest.mark.unit

TABLES = ["users", "orders", "fresh"]
COLUMNS = ["a", "b", "email"]

OPERATIONS = st.one_of(
    st.builds(
        lambda t, c, n: f'op.add_column("{t}", sa.Column("{c}", sa.Integer, nullable={n}))',
        st.sampled_from(TABLES),
        st.sampled_from(COLUMNS),
        st.booleans(),
    ),
    st.builds(
        lambda t, c: f'op.drop_column("{t}", "{c}")',
        st.sampled_from(TABLES),
        st.sampled_from(COLUMNS),
    ),
    st.builds(
        lambda t, c, n: f'op.alter_column("{t}", "{c}", nullable={n}, type_=sa.BigInteger())',
        st.sampled_from(TABLES),
        st.sampled_from(COLUMNS),
        st.booleans(),
    ),
    st.builds(
        lambda t, c, k: (
            f'op.create_index("ix_{t}_{c}", "{t}", ["{c}"], postgresql_concurrently={k})'
        ),
        st.sampled_from(TABLES),
        st.sampled_from(COLUMNS),
        st.booleans(),
    ),
    st.builds(
        lambda t: f'op.create_table("{t}", sa.Column("id", sa.Integer, primary_key=True))',
        st.sampled_from(TABLES),
    ),
    st.builds(lambda t: f'op.drop_table("{t}")', st.sampled_from(TABLES)),
    st.builds(
        lambda t, c: f'op.create_check_constraint("ck", "{t}", "{c} > 0")',
        st.sampled_from(TABLES),
        st.sampled_from(COLUMNS),
    ),
    st.builds(lambda s: f"op.execute({s!r})", st.text(max_size=40)),
    st.sampled_from(
        [
            "op.execute(\"SET lock_timeout = '1s'\")",
            'op.execute("UPDATE users SET a = 1")',
            'op.execute("VACUUM FULL users")',
            'op.rename_table("users", "people")',
            "op.get_bind().execute(sa.text('SELECT 1')).fetchall()",
            "raise RuntimeError('boom')",
        ]
    ),
)


def _revision(ops: list[str], autocommit: bool, downgrade: str) -> str:
    body = "\n".join(f"    {op}" for op in ops) or "    pass"
    if autocommit:
        body = "    with op.get_context().autocommit_block():\n" + "\n".join(
            f"        {op}" for op in ops or ["pass"]
        )
    return (
        "import sqlalchemy as sa\nfrom alembic import op\n\nrevision = 'p1'\n"
        f"down_revision = None\n\n\ndef upgrade():\n{body}\n\n\ndef downgrade():\n    {downgrade}\n"
    )


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(OPERATIONS, max_size=8),
    autocommit=st.booleans(),
    downgrade=st.sampled_from(["pass", "raise NotImplementedError", 'op.drop_table("users")']),
)
def test_random_operation_sequences_never_crash(ops, autocommit, downgrade) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        versions = Path(tmp) / "versions"
        versions.mkdir()
        (versions / "p1.py").write_text(_revision(ops, autocommit, downgrade))
        report = check_migrations(Path(tmp), from_rev=None)
        assert [r.revision for r in report.revisions] == ["p1"]
        json.dumps(report.to_dict())
        assert report.to_markdown().startswith("# Migration check")
        assert report.exit_code in (0, 1)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=120))
def test_random_sql_never_crashes_the_parser(sql) -> None:
    for op in parse_sql(sql):
        assert op.kind
