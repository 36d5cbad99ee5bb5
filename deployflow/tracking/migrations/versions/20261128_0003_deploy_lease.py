"""A lease on every running deploy: the time its run last said it was alive.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 07:50:00

A deploy renews ``heartbeat_at`` every few seconds while it runs. The next deploy of the same
service and environment tells a dead run from a live one by this lease alone, so it works with
several Prefect servers sharing one tracking database and recognises a killed run in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("heartbeat_at")
