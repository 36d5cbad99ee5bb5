"""Helpers for driving the Prefect CLI against the session's real Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[3]

PrefectCLI = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def prefect_env(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for Prefect subprocesses: the test server, and a home of their own.

    A private ``PREFECT_HOME`` keeps the developer's profiles (which may point at another server)
    out of the test; ``DEPLOYFLOW_DATA_DIR`` keeps flow runs off ``~/.deployflow``.
    """
    home = tmp_path_factory.mktemp("prefect-home")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DEPLOYFLOW_DATA_DIR": str(tmp_path_factory.mktemp("deployflow-data")),
    }
    env.pop("DEPLOYFLOW_DATABASE_URL", None)
    return env


@pytest.fixture(scope="module")
def prefect_cli(prefect_env: dict[str, str]) -> PrefectCLI:
    """Run ``python -m prefect <args>`` from the repository root; fail the test on a non-zero exit."""

    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv: Sequence[str] = [sys.executable, "-m", "prefect", *args]
        result = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=prefect_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, (
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result

    return run
