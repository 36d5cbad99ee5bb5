"""Migration safety for Alembic projects (step 2 of the deploy): lint, graph, staging, impact.

Core code: no Prefect import. The flow calls ``check_migrations`` and writes ``to_markdown()`` as an
artifact; the CLI is ``deployflow.migrations.command``.

The analysis imports Alembic and pglast (about two seconds); the names below load on first use
(PEP 562) so that reading a service spec, which needs only ``MigrationsSpec``, stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deployflow.migrations.check import check_migrations
    from deployflow.migrations.graph import MigrationInputError
    from deployflow.migrations.report import Finding, MigrationReport
    from deployflow.migrations.rules import RULES, Rule
    from deployflow.migrations.spec import DowntimeWindow, MigrationsSpec
    from deployflow.migrations.staging import read_deployed_revision

_WHERE = {
    "check_migrations": "check",
    "MigrationInputError": "graph",
    "Finding": "report",
    "MigrationReport": "report",
    "RULES": "rules",
    "Rule": "rules",
    "DowntimeWindow": "spec",
    "MigrationsSpec": "spec",
    "read_deployed_revision": "staging",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
