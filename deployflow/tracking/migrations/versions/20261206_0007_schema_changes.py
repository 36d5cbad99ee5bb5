"""Schema changes a release applied to the service's database (``migrations.apply``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 08:40:00

A release that applies its migrations records the target database's Alembic revision before and
after, what step 2 read of each revision (can the old version run with it, is it reversible) and
what became of it after a rollback (kept, downgraded, or left with the command to undo it), so a
later rollback, manual or automatic, knows what the schema can undo.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("revision_before", sa.String(length=255), nullable=True),
        sa.Column("revision_after", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('applied', 'failed', 'kept', 'downgraded', 'left')",
            name=op.f("ck_schema_changes_status_known"),
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_schema_changes_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_changes")),
    )
    op.create_index(op.f("ix_schema_changes_deployment_id"), "schema_changes", ["deployment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_schema_changes_deployment_id"), table_name="schema_changes")
    op.drop_table("schema_changes")
