"""At most one unfinished real deploy per service and environment.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 10:55:00

The flow checks for a live deploy before it starts, but two runs started in the same instant could
both pass that check; this partial unique index makes the second insert fail instead. Dry runs never
touch traffic and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("status IN ('pending', 'running') AND NOT dry_run")


def upgrade() -> None:
    op.create_index(
        "uq_deployments_one_active",
        "deployments",
        ["service", "environment"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_deployments_one_active", table_name="deployments")
