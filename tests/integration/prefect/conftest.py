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


class RestartablePrefectServer:
    """A ``prefect server start`` subprocess on its own SQLite file and port, which a test can
    kill (SIGKILL, as a crashed machine) and start again on the same port and database: what a
    Prefect server restart looks like to a deploy that was using it."""

    def __init__(self, home: Path) -> None:
        from deployflow.processes import free_port

        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DEPLOYFLOW_"))
        }
        return {
            **clean,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home}/prefect.db",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }

    def start(self, timeout: float = 180) -> RestartablePrefectServer:
        import httpx

        from deployflow.polling import wait_for

        self.starts += 1
        log = self.home / f"server-{self.starts}.log"
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                "--port", str(self.port)]  # fmt: skip
        self.process = start_in_own_group(argv, self.env(), log)

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"prefect server exited:\n{log.read_text()}")
            return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200

        wait_for(healthy, timeout=timeout, interval=0.25, what="the prefect server's health")
        return self

    def kill(self) -> None:
        if self.process is not None:
            kill_group(self.process)
            self.process = None

    def __enter__(self) -> RestartablePrefectServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
