"""Feature flag changes a deploy made: which flag, to what share of users, and why.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 09:45:00

A blue-green release turns its feature flags on step by step and turns one off at once when a
step fails (the kill switch). Each change is a row, so "who turned new-checkout off, and when"
has an answer after the run is gone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flag_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("flag", sa.String(length=200), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "percent >= 0 AND percent <= 100", name=op.f("ck_flag_changes_percent_range")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_flag_changes_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_changes")),
    )
    op.create_index(op.f("ix_flag_changes_deployment_id"), "flag_changes", ["deployment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_flag_changes_deployment_id"), table_name="flag_changes")
    op.drop_table("flag_changes")
