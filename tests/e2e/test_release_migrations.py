"""Releases that apply their migrations (``migrations.apply``), on the sandbox against a real
PostgreSQL: an expand change stays applied when the release is rolled back, a reversible range
the spec allows to downgrade is downgraded once traffic is back on the old version, a contract
change is refused before anything starts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from deployflow.migrations import read_deployed_revision, staging_script
from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from deployflow.tracking import db, repository
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.e2e

PROJECT = Path(__file__).resolve().parents[1] / "fixtures" / "migrations" / "projects" / "release"


def _database_at(postgres, name: str, revision: str) -> str:
    """A database of the service, migrated to ``revision`` (what the live version runs on)."""
    url = postgres.create_database(name)
    leg = staging_script.migrate(
        {"url": url, "alembic_dir": str(PROJECT), "destination": revision, "upgrade": True,
         "version_locations": [str(PROJECT / "versions")]}
    )  # fmt: skip
    assert leg["ok"], leg
    return url


@contextmanager
def release_spec(name: str, migrations: str) -> Iterator[Path]:
    """The example spec with two stages and a ``migrations`` section, beside it so its relative
    paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    assert "steps: [5, 25, 50, 100]" in text
    path = EXAMPLE_SPEC.parent / f".test-{name}.yaml"
    path.write_text(
        text.replace("steps: [5, 25, 50, 100]", "steps: [50, 100]")
        + f"\nmigrations:\n  path: {PROJECT}\n{migrations}"
    )
    try:
        yield path
    finally:
        path.unlink()


def _columns(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {c["name"] for c in inspect(engine).get_columns("orders")}
    finally:
        engine.dispose()


def _serving(sandbox: Sandbox) -> set[str]:
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.address: i.version for i in build_target(spec).instances()}
    assert build_router(spec).state().canary is None
    served = {httpx.get(sandbox.frontend_url + "/api/items").json()["version"] for _ in range(10)}
    assert set(versions.values()) == served, "only the version serving runs"
    return served


def _schema_rows(deployment_id: int) -> list:
    engine = db.make_engine(db.database_url())
    try:
        with db.session_factory(engine)() as s:
            return [
                (c.revision_before, c.revision_after, c.status, c.detail)
                for c in repository.get_deployment(s, deployment_id).schema_changes
            ]
    finally:
        engine.dispose()


def test_an_expand_migration_stays_applied_when_the_release_is_rolled_back(
    sandbox: Sandbox, postgres
) -> None:
    url = _database_at(postgres, "release_expand", "rel_a")
    live = _serving(sandbox)
    section = f"  database_url: {url}\n  to_revision: rel_b\n  apply: {{}}\n"
    with release_spec("release-expand", section) as spec_file:
        state = deploy(
            environment="sandbox", spec_path=str(spec_file), version="v3", return_state=True
        )
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "rolled_back", result["message"]  # restored and verified
    # Applied before v3 took traffic, and kept: the old version runs with an added column.
    assert read_deployed_revision(url) == "rel_b"
    assert "coupon" in _columns(url)
    assert _serving(sandbox) == live
    [(before, after, status, detail)] = _schema_rows(result["deployment_id"])
    assert (before, after, status) == ("rel_a", "rel_b", "kept")
    assert "expand change" in detail
    report = db.data_dir() / "reports" / f"demo-{result['deployment_id']}" / "report.md"
    text = report.read_text()
    assert "## Database schema" in text
    assert "**kept**: rel_a → rel_b" in text


def test_a_reversible_range_the_spec_allows_is_downgraded_after_traffic_is_back(
    sandbox: Sandbox, postgres
) -> None:
    url = _database_at(postgres, "release_contract", "rel_a")
    staging = _database_at(postgres, "release_contract_staging", "rel_a")
    live = _serving(sandbox)
    section = (
        f"  database_url: {url}\n  staging_url: {staging}\n"
        # The team reviewed the drop (a warning for them) and allows a downgrade on rollback.
        "  rules: {drop-column: warning}\n  apply: {downgrade_on_rollback: true}\n"
    )
    with release_spec("release-downgrade", section) as spec_file:
        # Direct: a canary over a contract change is refused (the next test).
        state = deploy(
            environment="sandbox",
            spec_path=str(spec_file),
            version="v3",
            strategy="direct",
            return_state=True,
        )
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "rolled_back", result["message"]
    # Upgraded to rel_c for v3, then back to rel_a once v1 served all the traffic again.
    assert read_deployed_revision(url) == "rel_a"
    assert _columns(url) == {"id", "note"}
    assert _serving(sandbox) == live
    [(before, after, status, detail)] = _schema_rows(result["deployment_id"])
    assert (before, after, status) == ("rel_a", "rel_a", "downgraded")
    assert "after traffic was back on" in detail


def test_a_contract_change_is_refused_before_traffic_moves(sandbox: Sandbox, postgres) -> None:
    url = _database_at(postgres, "release_refused", "rel_a")
    live = _serving(sandbox)
    section = f"  database_url: {url}\n  rules: {{drop-column: warning}}\n  apply: {{}}\n"
    with release_spec("release-refused", section) as spec_file:
        state = deploy(
            environment="sandbox", spec_path=str(spec_file), version="v2", return_state=True
        )
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "aborted", result["message"]
    assert "rel_c (drops a column)" in result["message"]
    assert "Split expand and contract" in result["message"]
    assert result["stages"] == []
    # Nothing applied, nothing started, nothing moved.
    assert read_deployed_revision(url) == "rel_a"
    assert _serving(sandbox) == live
    assert _schema_rows(result["deployment_id"]) == []
