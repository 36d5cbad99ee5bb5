"""Step 2 with the service's own interpreter: a real SQLAlchemy 1.3 environment (built from PyPI
once, cached under .deployflow/), the Flask-Migrate layout, the staging round trip in that
interpreter, and no network while revisions are read."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from deployflow.migrations import MigrationsSpec, check_migrations
from deployflow.migrations.command import main

pytestmark = pytest.mark.integration

PROJECTS = Path(__file__).resolve().parents[2] / "fixtures" / "migrations" / "projects"
CORPUS = PROJECTS.parent


def _findings(report) -> dict[str, list[str]]:
    return {r.revision: sorted(f.rule_id for f in r.findings) for r in report.revisions}


def test_sqlalchemy_13_reads_what_sqlalchemy_2_reads(sqlalchemy13_python) -> None:
    # The rules corpus read by a service on SQLAlchemy 1.3 and Alembic 1.13 gives the findings
    # deployflow's own SQLAlchemy 2 gives, revision by revision.
    for project in ("raw_sql", "downgrades", "env_fallback", "roundtrip_broken"):
        own = check_migrations(PROJECTS / project, from_rev=None)
        old = check_migrations(PROJECTS / project, from_rev=None, python=str(sqlalchemy13_python))
        assert old.read_with["sqlalchemy"] == "1.3.24"
        assert [r.unreadable for r in old.revisions] == [r.unreadable for r in own.revisions]
        assert _findings(old) == _findings(own), project
        assert [r.reversibility for r in old.revisions] == [r.reversibility for r in own.revisions]


def test_the_flask_migrate_layout_on_sqlalchemy_13(sqlalchemy13_python, capsys) -> None:
    code = main(
        [str(PROJECTS / "flask_layout" / "migrations"), "--python", str(sqlalchemy13_python),
         "--format", "json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["summary"]["unreadable"] == []
    assert report["read_with"]["sys_path"] == str((PROJECTS / "flask_layout").resolve())
    assert [op["table"] for op in report["revisions"][0]["operations"]] == ["orders"]
    # alembic.ini inside the application package: shop/http.py never shadows `http`.
    code = main(
        [str(PROJECTS / "package_layout" / "shop" / "migrations"), "--python",
         str(sqlalchemy13_python), "--format", "json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["summary"]["unreadable"] == []


def test_a_revision_reaching_the_network_in_the_service_interpreter(
    sqlalchemy13_python, tmp_path, monkeypatch
) -> None:
    versions = tmp_path / "alembic" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(CORPUS / "base.py", versions / "base.py")
    shutil.copy(CORPUS / "revisions" / "reaches_network.py", versions / "reaches_network.py")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        monkeypatch.setenv("DEPLOYFLOW_TEST_PORT", str(port))
        report = check_migrations(
            versions.parent, from_rev="base0001", python=str(sqlalchemy13_python)
        )
        [revision] = report.revisions
        assert f"127.0.0.1:{port}" in (revision.unreadable or "")
        assert report.exit_code == 1
        listener.settimeout(0)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached it


def test_the_staging_round_trip_runs_in_the_service_interpreter(
    sqlalchemy13_python, postgres
) -> None:
    # A psycopg2 URL, as a SQLAlchemy 1.3 service writes it: psycopg2 is installed in the
    # service's environment only, so the round trip passing shows where it ran; its revisions
    # import the application (shop.models) from the checkout root.
    url = postgres.create_database("mig_sa13").replace("postgresql+psycopg://", "postgresql://")
    alembic_dir = PROJECTS / "flask_layout" / "migrations"
    spec = MigrationsSpec(path=alembic_dir, python=str(sqlalchemy13_python), staging_url=url)
    report = check_migrations(alembic_dir, from_rev=None, settings=spec)
    assert report.staging is not None
    assert report.staging.interpreter == str(sqlalchemy13_python)
    assert [(leg.name, leg.ok) for leg in report.staging.legs] == [
        ("upgrade", True), ("downgrade", True), ("upgrade again", True)
    ], report.staging  # fmt: skip
    assert report.staging.backend == "postgresql"
    assert not report.blocking
    assert [r.reversibility for r in report.revisions] == ["reversible", "reversible"]
