"""Helpers for driving the Prefect CLI against the session's real Prefect server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).parents[3]

PrefectCLI = Callable[..., subprocess.CompletedProcess[str]]


def start_in_own_group(
    argv: Sequence[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` from the repository root in a new process group, output to ``log``.

    A worker starts each flow run as a child process; its own group lets ``kill_group`` stop the
    child too when a test fails halfway. Output goes to a file because a process blocked on a full
    pipe would look like a slow flow.
    """
    with log.open("w") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the process group started by ``start_in_own_group`` and reap its leader."""
    # Even when the leader has exited, children it left behind still carry its group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


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
    """Run ``python -m prefect <args>`` from the repository root; a non-zero exit fails the test."""

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
