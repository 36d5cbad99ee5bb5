"""The capture in a worker process of another interpreter (``--python``), as a real process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deployflow.migrations.command import main

pytestmark = pytest.mark.integration

SERVICE = (
    Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "projects" / "service_app"
)


def test_worker_resolves_app_imports_and_survives_exit_and_blocking_revisions(capsys) -> None:
    # The worker runs `python -I capture_script.py` from the service's root (where alembic.ini
    # is), so `import ledgerapp` resolves; fd-level writes, os._exit and a sleep in C stay in it.
    code = main(
        [str(SERVICE / "migrations"), "--python", sys.executable, "--revision-timeout", "1",
         "--format", "json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    revisions = {r["revision"]: r for r in report["revisions"]}
    assert code == 1
    assert revisions["sa_a"]["unreadable"] is None
    assert [op["table"] for op in revisions["sa_a"]["operations"]] == ["ledger_entries"]
    assert "died" in revisions["sa_b"]["unreadable"]
    assert "timed out after 1s" in revisions["sa_c"]["unreadable"]
    # A fresh worker reads the revision after the one that killed or blocked the last.
    assert revisions["sa_d"]["unreadable"] is None
    assert revisions["sa_d"]["reversibility"] == "reversible"
    assert report["summary"]["unreadable"] == ["sa_b", "sa_c"]


def test_an_interpreter_without_alembic_makes_every_revision_unreadable(tmp_path, capsys) -> None:
    # `python -S` has no site-packages: it stands for a service interpreter lacking Alembic.
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    python.chmod(0o755)
    code = main(
        [str(SERVICE / "migrations"), "--python", str(python), "--to", "sa_a", "--format", "json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    [revision] = report["revisions"]
    assert "did not start" in revision["unreadable"]
    assert "alembic" in revision["unreadable"]
