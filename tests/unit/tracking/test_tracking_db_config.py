"""Where the tracking database lives, and that URLs shown to people never carry a password."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from deployflow.tracking import db
from deployflow.tracking.ledger import Ledger

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


def _sqlite_with_table(path) -> Engine:
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return engine


def test_a_deferred_transaction_that_read_before_another_write_cannot_write(tmp_path):
    """Why the ledger begins IMMEDIATE: this is how a deploy failed under load ("database is
    locked" at once, busy timeout or not)."""
    engine = _sqlite_with_table(tmp_path / "x.db")
    try:
        with db.session_factory(engine)() as s, s.begin():
            s.execute(text("SELECT count(*) FROM t"))
            with sqlite3.connect(tmp_path / "x.db", timeout=0) as other:
                other.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(OperationalError, match="database is locked"):
                s.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        engine.dispose()


def test_a_writing_transaction_holds_the_write_lock_from_its_first_statement(tmp_path):
    engine = _sqlite_with_table(tmp_path / "x.db")
    try:
        with db.writing_session_factory(engine)() as s, s.begin():
            s.execute(text("SELECT count(*) FROM t"))
            with (
                sqlite3.connect(tmp_path / "x.db", timeout=0) as other,
                pytest.raises(sqlite3.OperationalError, match="database is locked"),
            ):
                other.execute("INSERT INTO t VALUES (1)")
            s.execute(text("INSERT INTO t VALUES (2)"))
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT x FROM t").scalars().all() == [2]
    finally:
        engine.dispose()


def test_every_ledger_transaction_takes_the_write_lock_first(tmp_path):
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")
    with ledger._session() as s:
        s.execute(text("SELECT 1 FROM deployments"))
        with (
            sqlite3.connect(tmp_path / "tracking.db", timeout=0) as other,
            pytest.raises(sqlite3.OperationalError, match="database is locked"),
        ):
            other.execute("DELETE FROM deployments")
