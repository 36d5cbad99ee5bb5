"""What the reports need to be written from the record alone.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 09:00:00

The summary and the incident report of a deploy are rendered from its record as this database
keeps it (``deployflow.tracking.record``), so what they show must be kept here:
``deployments.details`` holds what the deploy decided and measured beyond its stages (the
strategy's rationale and risk table, the stable version's baseline P95, the blue-green switch
time, the post-deploy verification, what was reconciled before it); ``stage_results.label``
says what a stage observed when it was not a canary at a weight ("v2 in isolation", a flag step)
and ``stage_results.note`` how a promotion was reached when not on evidence alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("details", sa.JSON(), nullable=True))
    with op.batch_alter_table("stage_results") as batch:
        batch.add_column(sa.Column("label", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stage_results") as batch:
        batch.drop_column("note")
        batch.drop_column("label")
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("details")
