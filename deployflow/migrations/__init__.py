"""Migration safety for Alembic projects (step 2 of the deploy): lint, graph, staging, impact.

Core code: no Prefect import. The flow calls ``check_migrations`` and writes ``to_markdown()`` as an
artifact; the CLI is ``deployflow.migrations.command``.
"""

from deployflow.migrations.check import check_migrations
from deployflow.migrations.graph import MigrationInputError
from deployflow.migrations.report import Finding, MigrationReport
from deployflow.migrations.rules import RULES, Rule
from deployflow.migrations.spec import DowntimeWindow, MigrationsSpec
from deployflow.migrations.staging import read_deployed_revision

__all__ = [
    "RULES",
    "DowntimeWindow",
    "Finding",
    "MigrationInputError",
    "MigrationReport",
    "MigrationsSpec",
    "Rule",
    "check_migrations",
    "read_deployed_revision",
]
