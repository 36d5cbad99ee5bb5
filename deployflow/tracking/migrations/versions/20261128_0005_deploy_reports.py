"""The story of a deploy after it ended: its report, and when the released commit was made.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 11:40:00

``deploy_reports`` keeps the incident report (after a rollback) or the success summary of a
deploy, markdown and chart, so ``deployflow report RUN_ID`` prints it after the run is gone.
``deployments.commit_at`` is the commit time of ``git_ref``: the start of the lead time for
changes (DORA), which git alone cannot give once the checkout has moved on.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("commit_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "deploy_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=False),
        sa.Column("chart_png", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('incident', 'summary')", name=op.f("ck_deploy_reports_kind_known")
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deploy_reports_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deploy_reports")),
    )
    op.create_index(op.f("ix_deploy_reports_deployment_id"), "deploy_reports", ["deployment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_deploy_reports_deployment_id"), table_name="deploy_reports")
    op.drop_table("deploy_reports")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("commit_at")
