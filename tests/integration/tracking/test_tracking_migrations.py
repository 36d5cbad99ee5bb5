"""Alembic migrations on real SQLite files and a real PostgreSQL server.

The model/migration agreement test is the guard against a model change shipped without a
migration: it fails CI with the diff.
"""

from __future__ import annotations

import itertools
import multiprocessing
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from deployflow.processes import free_port
from deployflow.tracking import db
from deployflow.tracking import repository as repo
from deployflow.tracking.models import Base

pytestmark = pytest.mark.integration

TABLES = {
    "deployments",
    "stage_results",
    "incidents",
    "check_results",
    "schema_changes",
    "flag_changes",
    "deploy_reports",
}
_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    """A URL to an empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tracking.db'}"
    postgres = request.getfixturevalue("postgres")
    return postgres.create_database(f"tracking_{next(_names)}")


def _tables(url: str) -> set[str]:
    engine = db.make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url):
    assert db.current_revision(empty_url) is None
    db.upgrade(empty_url)
    assert db.current_revision(empty_url) == db.head_revision()
    assert _tables(empty_url) == TABLES

    db.upgrade(empty_url)  # already at head: a no-op, not an error
    assert db.current_revision(empty_url) == db.head_revision()

    db.downgrade(empty_url, "base")
    assert db.current_revision(empty_url) is None
    assert _tables(empty_url) == set()

    db.upgrade(empty_url)
    assert _tables(empty_url) == TABLES


def test_models_and_migrations_agree(empty_url):
    db.upgrade(empty_url)
    engine = db.make_engine(empty_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "target_metadata": Base.metadata}
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"models differ from migrations; add an Alembic revision: {diff}"


def test_migrated_schema_round_trips_json_and_utc_times(empty_url):
    db.upgrade(empty_url)
    # A non-UTC session time zone on PostgreSQL must not leak into the values we read back.
    options = (
        {"connect_args": {"options": "-c timezone=Asia/Tokyo"}} if "postgresql" in empty_url else {}
    )
    engine = db.make_engine(empty_url, **options)
    sessions = db.session_factory(engine)
    started = datetime(2026, 5, 1, 8, 30, tzinfo=timezone(timedelta(hours=-4)))
    try:
        with sessions.begin() as session:
            deployment = repo.create_deployment(
                session,
                service="payments",
                environment="production",
                version="2.0.0",
                strategy="canary",
                started_at=started,
            )
            repo.add_stage_result(
                session,
                deployment.id,
                index=0,
                weight=10,
                verdict="promote",
                started_at=started,
                measurements=[
                    {"metric": "p99_latency", "value": float("nan"), "labels": {"pod": "a"}}
                ],
            )
            repo.update_deployment(session, deployment.id, status="succeeded")
            deployment_id = deployment.id
        with sessions() as session:
            loaded = repo.get_deployment(session, deployment_id)
            assert loaded.started_at == datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
            assert loaded.started_at.utcoffset() == timedelta(0)
            assert loaded.stages[0].measurements == [
                {"metric": "p99_latency", "value": "NaN", "labels": {"pod": "a"}}
            ]
            assert repo.last_successful(session, "payments", "production").version == "2.0.0"
    finally:
        engine.dispose()


def test_concurrent_upgrades_from_several_processes(empty_url):
    # Processes, not threads: that is how several deployflow workers race at startup (and Alembic's
    # context is process-global). A forkserver with the module preloaded pays the SQLAlchemy and
    # Alembic import once instead of once per process.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["deployflow.tracking.db"])
    processes = [ctx.Process(target=db.upgrade, args=(empty_url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
    for process in processes:
        process.close()
    assert db.current_revision(empty_url) == db.head_revision()
    assert _tables(empty_url) == TABLES


def test_unreachable_database_error_masks_the_password():
    url = f"postgresql+psycopg://deployer:s3cr3t-pw@127.0.0.1:{free_port()}/deployflow"
    with pytest.raises(db.TrackingDatabaseError) as caught:
        db.upgrade(url)
    message = str(caught.value)
    assert "s3cr3t-pw" not in message
    assert "postgresql+psycopg://deployer:***@127.0.0.1" in message
