"""Where the tracking database lives, and that URLs shown to people never carry a password."""

from __future__ import annotations

import pytest

from deployflow.tracking import db

pytestmark = pytest.mark.unit


def test_database_url_prefers_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("DEPLOYFLOW_DATA_DIR", str(tmp_path / "unused"))
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", "postgresql+psycopg://df@db.internal/deployflow")
    assert db.database_url() == "postgresql+psycopg://df@db.internal/deployflow"
    assert not (tmp_path / "unused").exists()


def test_database_url_defaults_to_sqlite_in_the_data_dir_which_is_created(monkeypatch, tmp_path):
    monkeypatch.delenv("DEPLOYFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("DEPLOYFLOW_DATA_DIR", str(tmp_path / "state" / "deployflow"))
    assert db.database_url() == f"sqlite:///{tmp_path / 'state' / 'deployflow' / 'deployflow.db'}"
    assert (tmp_path / "state" / "deployflow").is_dir()


def test_data_dir_defaults_to_dot_deployflow_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DEPLOYFLOW_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert db.data_dir() == tmp_path / ".deployflow"
    assert db.data_dir().is_dir()


def test_mask_url_hides_the_password():
    shown = db.mask_url("postgresql+psycopg://deployer:s3cr3t-pw@db.internal:5432/deployflow")
    assert "s3cr3t-pw" not in shown
    assert shown == "postgresql+psycopg://deployer:***@db.internal:5432/deployflow"


def test_sqlite_engine_enforces_foreign_keys(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()
