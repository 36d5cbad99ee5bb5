"""Staging round trip and impact on a real PostgreSQL (started by the suite) and on SQLite."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from deployflow.migrations import MigrationsSpec, check_migrations, read_deployed_revision
from deployflow.migrations.command import main
from deployflow.migrations.staging import round_trip

pytestmark = pytest.mark.integration

PROJECTS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "projects"
CORPUS = PROJECTS.parent


def _legs(report) -> list[tuple[str, bool]]:
    return [(leg.name, leg.ok) for leg in report.staging.legs]


def test_round_trip_on_postgresql(postgres) -> None:
    url = postgres.create_database("mig_roundtrip")
    report = check_migrations(PROJECTS / "roundtrip", from_rev=None, staging_url=url)
    assert _legs(report) == [("upgrade", True), ("downgrade", True), ("upgrade again", True)]
    assert report.staging.backend == "postgresql"
    assert all(leg.seconds > 0 for leg in report.staging.legs)
    assert not report.blocking
    assert read_deployed_revision(url) == "rt_c"


def test_round_trip_from_the_deployed_revision_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'staging.db'}"
    result = round_trip(PROJECTS / "roundtrip", url, from_rev="rt_a", to_rev="rt_c", lock_timeout=5)
    assert result.ok, result.to_dict()
    assert result.backend == "sqlite"
    assert read_deployed_revision(url) == "rt_c"
    report = check_migrations(PROJECTS / "roundtrip", from_rev="rt_c", staging_url=url)
    assert report.revisions == []
    assert report.staging.ok


def test_failed_leg_names_the_revision_and_the_sql_error(postgres, capsys) -> None:
    url = postgres.create_database("mig_broken")
    code = main([str(PROJECTS / "roundtrip_broken"), "--staging-url", url])
    out = capsys.readouterr().out
    assert code == 1
    assert "Staging downgrade failed at revision rb_c" in out
    assert "phone_typo" in out


def test_failure_on_sqlite_is_reported(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'broken.db'}"
    report = check_migrations(PROJECTS / "roundtrip_broken", from_rev=None, staging_url=url)
    assert report.blocking
    failed = [leg for leg in report.staging.legs if not leg.ok]
    assert failed
    assert failed[0].name == "downgrade"
    assert failed[0].failed_revision == "rb_c"


def test_password_never_appears_in_reports(postgres, capsys) -> None:
    url = postgres.url("mig_roundtrip").replace("postgres@", "postgres:s3cr3t-pw@")
    create = create_engine(postgres.url("postgres"), isolation_level="AUTOCOMMIT")
    with create.connect() as conn:
        conn.execute(text("CREATE DATABASE mig_secret"))
    create.dispose()
    url = url.replace("/mig_roundtrip", "/mig_secret")
    report = check_migrations(PROJECTS / "roundtrip", from_rev=None, staging_url=url)
    assert report.staging.ok  # trust auth: the password is accepted and ignored
    rendered = report.to_json() + report.to_markdown() + report.to_text()
    assert "s3cr3t-pw" not in rendered
    assert "***" in report.staging.url


@pytest.fixture(scope="module")
def big_events(postgres) -> str:
    """A staging database whose events table holds 5000 analysed rows (shared: tests only read)."""
    url = postgres.create_database("mig_impact")
    result = round_trip(PROJECTS / "impact", url, from_rev="im_a", to_rev="im_a", lock_timeout=5)
    assert result.legs[0].ok
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO events (kind) SELECT 'k' || g % 7 FROM generate_series(1, 5000) g")
        )
        conn.execute(text("ANALYZE events"))
    engine.dispose()
    return url


def test_large_table_requires_downtime_and_blocks_outside_a_window(big_events) -> None:
    spec = MigrationsSpec(path=PROJECTS / "impact", large_table_rows=1000)
    report = check_migrations(
        PROJECTS / "impact", from_rev="im_a", settings=spec, staging_url=big_events
    )
    # The finding is suppressed (acknowledged), but the measured size still requires downtime.
    assert [f.counts for f in report.all_findings()] == [False]
    assert report.impact.downtime_required
    [events] = report.impact.tables
    assert events.table == "events"
    assert events.rows >= 4000
    assert events.bytes > 0
    assert events.large
    assert report.blocking
    assert "downtime required" in " ".join(report.blocking_reasons)
    assert "Downtime required: create-index-non-concurrent on events" in report.to_markdown()


def test_approved_window_covering_now_lets_the_deploy_proceed(big_events) -> None:
    now = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    window = {"start": now - timedelta(hours=1), "end": now + timedelta(hours=1),
              "reason": "monthly maintenance", "approved_by": "dba on call"}  # fmt: skip
    spec = MigrationsSpec(
        path=PROJECTS / "impact", large_table_rows=1000, downtime_windows=[window]
    )
    report = check_migrations(
        PROJECTS / "impact", from_rev="im_a", settings=spec, staging_url=big_events, now=now
    )
    assert report.impact.downtime_required
    assert report.impact.approved
    assert not report.blocking
    assert report.exit_code == 0
    assert "monthly maintenance" in report.to_markdown()
    later = check_migrations(
        PROJECTS / "impact", from_rev="im_a", settings=spec, staging_url=big_events,
        now=now + timedelta(days=1),
    )  # fmt: skip
    assert later.blocking


def test_small_table_needs_no_downtime(big_events) -> None:
    report = check_migrations(PROJECTS / "impact", from_rev="im_a", staging_url=big_events)
    assert not report.impact.downtime_required
    assert not report.blocking


def _alembic_dir(tmp_path: Path, revision: str) -> Path:
    versions = tmp_path / revision / "versions"
    versions.mkdir(parents=True)
    shutil.copy(CORPUS / "base.py", versions / "base.py")
    shutil.copy(CORPUS / "revisions" / revision, versions / revision)
    return versions.parent


def test_the_staging_downgrade_overrides_what_offline_could_not_show(postgres, tmp_path) -> None:
    # Offline its downgrade cannot read rows (unknown); online on PostgreSQL it runs.
    url = postgres.create_database("mig_online_downgrade")
    alembic_dir = _alembic_dir(tmp_path, "downgrade_offline_only.py")
    report = check_migrations(alembic_dir, from_rev="base0001", staging_url=url)
    assert report.staging is not None
    assert report.staging.ok, report.staging
    [revision] = report.revisions
    assert revision.reversibility == "reversible (its downgrade passed on staging)"
    assert not report.blocking
    # A downgrade that refuses on purpose fails on staging too: irreversible, saying where.
    url = postgres.create_database("mig_refused_downgrade")
    report = check_migrations(
        _alembic_dir(tmp_path, "downgrade_raises.py"), from_rev="base0001", staging_url=url
    )
    [revision] = report.revisions
    assert revision.reversibility.startswith(
        "irreversible (its downgrade failed on staging: RuntimeError"
    )
    assert report.blocking
