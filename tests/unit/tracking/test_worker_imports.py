"""A worker's run needs no Alembic when the tracking database is already migrated: ``upgrade``
recognises the shipped head with one query (bench/bench_start_latency.py measures the import)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.tracking import db


def test_the_head_read_from_the_migration_files_is_alembics_head():
    assert db.shipped_head() == db.head_revision()


def test_upgrade_of_a_database_at_head_does_not_run_alembic(tmp_path: Path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'tracking.db'}"
    db.upgrade(url)
    calls: list[str] = []
    monkeypatch.setattr(db, "_run_alembic", lambda target, action, revision: calls.append(action))

    db.upgrade(url)
    assert calls == []


@pytest.mark.parametrize("state", ["empty", "behind"])
def test_upgrade_of_an_empty_or_older_database_runs_alembic(tmp_path: Path, state: str):
    url = f"sqlite:///{tmp_path / 'tracking.db'}"
    if state == "behind":
        db.upgrade(url, revision="0001")
    db.upgrade(url)
    assert db.current_revision(url) == db.head_revision()
