"""A worker starts every deploy in a fresh Python process that imports flows/deploy.py before the
flow's first task can run (issue 26: that import was 3.7 s). What a run may need later (the tracking
database's SQLAlchemy, the Slack SDK, Prometheus' client, the charts, a blue-green or flag subflow)
is imported when it is needed, not to load the flow. Guarded by what is in ``sys.modules`` after
the import, in a process of its own: a count, not a timing, so a loaded machine cannot flake it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.prefect.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

# Third-party packages a deploy imports only once a step needs them, and deployflow's own modules
# that only some specs need. Each was measured with `python -X importtime -c 'import flows.deploy'`
# (docs/team-server.md, "Start latency").
NOT_AT_IMPORT = (
    "sqlalchemy",  # the tracking database: the run's ledger imports it when the run opens it
    "alembic",
    "psycopg",
    "pglast",  # migration checks parse SQL only when the spec has migrations
    "slack_sdk",
    "prometheus_api_client",
    "pandas",
    "numpy",
    "scipy",
    "matplotlib",  # the report's chart
    "openfeature",
    "deployflow.tracking.db",
    "deployflow.tracking.models",
    "deployflow.tracking.repository",
    "flows.bluegreen",
    "flows.flags",
)


def modules_after(statement: str) -> set[str]:
    """The modules loaded by ``statement`` in a fresh interpreter run from the repository root."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{statement}; import sys, json; print(json.dumps(list(sys.modules)))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(f"{package}.") for m in modules)


def test_loading_the_deploy_flow_imports_none_of_what_a_run_needs_later() -> None:
    modules = modules_after("import flows.deploy")

    assert "flows.deploy" in modules
    assert [p for p in NOT_AT_IMPORT if loaded(modules, p)] == []


def test_the_tracking_database_is_imported_once_a_run_opens_it(tmp_path) -> None:
    # The other side of the guard: deferred, not dropped (a run still records everything).
    modules = modules_after(
        "import flows.deploy; from deployflow.tracking.ledger import Ledger; "
        f"Ledger.for_url('sqlite:///{tmp_path / 'tracking.db'}').recent_results('s', 'e', 1)"
    )

    assert loaded(modules, "sqlalchemy")
    assert "deployflow.tracking.repository" in modules
