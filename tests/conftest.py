"""Shared fixtures: real servers on free loopback ports, started once per session."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.sandbox.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server (Debian package) for the whole session; tests create databases."""
    with LocalPostgres() as pg:
        yield pg


# A service still on SQLAlchemy 1.3 (and the last Alembic supporting it), with the psycopg2
# driver such services use: its interpreter is what `--python` / `migrations.python` names.
SQLALCHEMY13_ENV = ("sqlalchemy==1.3.24", "alembic==1.13.3", "psycopg2-binary==2.9.13")


@pytest.fixture(scope="session")
def sqlalchemy13_python() -> Path:
    """The interpreter of a throwaway venv with SQLAlchemy 1.3 (from PyPI through uv), built
    once and cached under .deployflow/test-envs/ (a second session reuses it in milliseconds)."""
    root = Path(__file__).resolve().parents[1]
    env = root / ".deployflow" / "test-envs" / "sqlalchemy13"
    python = env / "bin" / "python"
    done = env / "deployflow-requirements.txt"
    wanted = "\n".join(SQLALCHEMY13_ENV)
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / "sqlalchemy13.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers build it once between them
        if not (python.exists() and done.exists() and done.read_text() == wanted):
            uv = (root / ".deployflow" / "uv-path").read_text().strip()
            base = getattr(sys, "_base_executable", sys.executable)
            subprocess.run([uv, "venv", "-q", "--clear", "--python", base, str(env)], check=True)
            subprocess.run(
                [uv, "pip", "install", "-q", "--python", str(python), *SQLALCHEMY13_ENV],
                check=True,
            )
            done.write_text(wanted)
    return python


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real Prefect server (SQLite, temporary) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # No telemetry from test servers: this machine, and many CI runners, cannot reach it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # It starts in seconds on an idle machine; a loaded 2-core runner has taken over 90 s.
    with prefect_test_harness(server_startup_timeout=240):
        yield str(PREFECT_API_URL.value())


_LAYER_MARKERS = {
    "unit": pytest.mark.unit,
    "integration": pytest.mark.integration,
    "e2e": pytest.mark.e2e,
    "browser": pytest.mark.browser,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test carries its layer's marker, so `-m unit` selects exactly the fast tests."""
    for item in items:
        if any(item.get_closest_marker(name) for name in _LAYER_MARKERS):
            continue
        parts = item.path.parts
        for name, marker in _LAYER_MARKERS.items():
            if name in parts:
                item.add_marker(marker)
                break


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C handled as in a terminal, whatever started the suite. A shell starts a background
    job (``make test &``, some CI runners) with SIGINT ignored, and every process the suite
    starts inherits that: a deploy under test would never see the Ctrl-C a test sends it. Python
    puts its own handler back here; the children it starts then begin with the default."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
