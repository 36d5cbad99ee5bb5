"""The capture in a worker process of another interpreter (``--python``), as a real process."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from deployflow.migrations import check_migrations
from deployflow.migrations.capture import ALEMBIC_LOCK
from deployflow.migrations.command import main

pytestmark = pytest.mark.integration

SERVICE = (
    Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "projects" / "service_app"
)


def _interpreter(tmp_path: Path, name: str, launcher: str) -> Path:
    python = tmp_path / name
    python.write_text(
        f'#!/bin/sh\n[ "$1" = "-I" ] && shift\nexec "{sys.executable}" -S {launcher}\n'
    )
    python.chmod(0o755)
    return python


def test_a_worker_of_an_interpreter_without_deployflow_reads_the_service_revisions(
    tmp_path, capsys
) -> None:
    # The stand-in for the service's interpreter: no site processing (-S), Alembic's
    # site-packages added by hand, deployflow unimportable (a service never has it).
    site = next(p for p in sys.path if p.endswith("site-packages"))
    launcher = (
        "import runpy, sys; sys.path.append(sys.argv.pop(1)); sys.modules['deployflow'] = None; "
        "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    python = _interpreter(tmp_path, "python", f'-c "{launcher}" "{site}" "$@"')
    # It runs `capture_script.py` from the service's root (where alembic.ini is), so
    # `import ledgerapp` resolves; fd-level writes, os._exit and a sleep in C stay in the worker.
    code = main(
        [str(SERVICE / "migrations"), "--python", str(python), "--revision-timeout", "2",
         "--format", "json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    revisions = {r["revision"]: r for r in report["revisions"]}
    assert code == 1
    assert revisions["sa_a"]["unreadable"] is None
    assert [op["table"] for op in revisions["sa_a"]["operations"]] == ["ledger_entries"]
    assert "died" in revisions["sa_b"]["unreadable"]
    assert "timed out after 2s" in revisions["sa_c"]["unreadable"]
    # A fresh worker reads the revision after the one that killed or blocked the last.
    assert revisions["sa_d"]["unreadable"] is None
    assert revisions["sa_d"]["reversibility"] == "reversible"
    assert report["summary"]["unreadable"] == ["sa_b", "sa_c"]
    # An interpreter without Alembic cannot run the capture: one bad-input error, naming the
    # argument and what is missing, and no report.
    bare = _interpreter(tmp_path, "bare-python", '"$@"')
    code = main(
        [str(SERVICE / "migrations"), "--python", str(bare), "--to", "sa_a", "--format", "json"]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "--python" in err
    assert "cannot run the capture" in err
    assert "No module named 'alembic'" in err


def test_a_revision_blocked_outside_python_is_left_behind_and_the_rest_still_read(
    tmp_path, monkeypatch
) -> None:
    corpus = SERVICE.parents[1]
    alembic_dir = tmp_path / "alembic"
    (alembic_dir / "versions").mkdir(parents=True)
    for name in ("base.py", "revisions/blocks.py", "revisions/prints.py"):
        shutil.copy(corpus / name, alembic_dir / "versions" / Path(name).name)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv("DEPLOYFLOW_TEST_FIFO", str(fifo))
    try:
        report = check_migrations(
            alembic_dir, from_rev="base0001", revision_timeout=1,
            staging_url=f"sqlite:///{tmp_path / 'staging.db'}",
        )  # fmt: skip
    finally:
        # Release the blocked revision so its thread ends and frees Alembic's lock.
        with open(fifo, "wb"):
            pass
        assert ALEMBIC_LOCK.acquire(timeout=10)
        ALEMBIC_LOCK.release()
    by_rev = {r.revision: r for r in report.revisions}
    assert "blocked outside Python" in (by_rev["ux_blocks"].unreadable or "")
    # The next revision was read by a worker process of this interpreter.
    assert by_rev["ux_prints"].unreadable is None
    assert "loading revision" in by_rev["ux_prints"].output
    # The staging round trip needs Alembic's lock, which the blocked revision may hold.
    assert report.staging is not None
    assert not report.staging.ok
    assert "still blocked" in (report.staging.error or "")
    assert report.exit_code == 1
