"""The warm launcher and its zygote on their own, without a Prefect server: the run's exit code and
the signal that ends it come back through the launcher, a zygote whose imported file changed
hands over to a fresh one that serves warm (not cold), the build step's command starts the run cold
when the interpreter or launcher it recorded is missing, and a launcher whose zygote took the run
without answering exits instead of starting the run a second time.

The run's process is the real ``prefect.engine``: without a flow run id it exits 1 at once; with
an API that never answers it waits, which gives a signal time to arrive.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployflow.polling import wait_for
from deployments.warm_start import warm_start_command, zygote_key
from tests.e2e.team_conftest_helpers import clean_environ, process_alive, stop_zygotes
from tests.integration.prefect.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

LAUNCHER = REPO_ROOT / "deployments" / "warm_start.py"
COLD = "starting the run cold"


@dataclass
class Warm:
    tmp: Path
    flows: Path
    env: dict[str, str]

    @property
    def warm_dir(self) -> Path:
        return Path(self.env["DEPLOYFLOW_WARM_DIR"])

    def argv(self) -> list[str]:
        return [sys.executable, "-I", "-S", str(LAUNCHER), "--preload", str(self.flows / "flow.py")]

    def launch(self, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(),
            cwd=self.tmp,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def zygote_log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.warm_dir.glob("*.log")))

    def zygote_pids(self) -> set[int]:
        return {int(p.read_text()) for p in self.warm_dir.glob("*.pid")}


def age(path: Path, seconds: float) -> None:
    """Give ``path`` a modification time ``seconds`` ago (a zygote distrusts files changed just
    before it started)."""
    past = time.time() - seconds
    os.utime(path, (past, past))


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[Warm]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "flow.py").write_text("import helper\n")
    (flows / "helper.py").write_text("VALUE = 1\n")
    for path in flows.iterdir():
        age(path, 60)
    env = {
        **clean_environ(),
        "PREFECT_HOME": str(tmp_path / "home"),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "DEPLOYFLOW_WARM_DIR": str(tmp_path / "warm"),
    }
    try:
        yield Warm(tmp_path, flows, env)
    finally:
        stop_zygotes(tmp_path / "warm")


def test_the_exit_code_comes_back_and_a_changed_file_brings_a_fresh_zygote(warm: Warm):
    first = warm.launch()  # no flow run id: the engine exits 1 at once

    assert first.returncode == 1, first.stderr
    assert "Invalid flow run id" in first.stderr
    assert COLD not in first.stderr
    assert "started a run's process" in warm.zygote_log()
    [old] = warm.zygote_pids()

    helper = warm.flows / "helper.py"
    helper.write_text("VALUE = 2\n")
    age(helper, 30)  # changed, and not in the last seconds
    second = warm.launch()

    assert second.returncode == 1, second.stderr
    assert COLD not in second.stderr  # served warm, by a zygote that imported the new file
    log = warm.zygote_log()
    assert "helper.py changed since it was imported; refusing the run" in log
    assert log.count("ready:") == 2
    assert log.count("started a run's process") == 2
    wait_for(lambda: not process_alive(old), timeout=10, interval=0.1, what="the old zygote")
    assert warm.zygote_pids() - {old}


def test_a_signal_to_the_launcher_ends_the_run_and_comes_back(warm: Warm):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        env = {
            **warm.env,
            "PREFECT_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api",
            "PREFECT__FLOW_RUN_ID": str(uuid.uuid4()),
        }
        launcher = subprocess.Popen(
            warm.argv(), cwd=warm.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            line = wait_for(
                lambda: next(
                    (x for x in warm.zygote_log().splitlines() if "started a run's process" in x),
                    None,
                ),
                timeout=120,
                interval=0.1,
                what="the run's process",
            )
            child = int(line.rsplit(", ", 1)[1])
            assert process_alive(child)

            launcher.send_signal(signal.SIGTERM)

            assert launcher.wait(timeout=30) == -signal.SIGTERM  # as the run's process ended
            assert not process_alive(child)
        finally:
            launcher.kill()
            _, stderr = launcher.communicate()
    assert COLD not in stderr.decode()


@pytest.mark.parametrize("missing", ["interpreter", "launcher"])
def test_the_build_steps_command_starts_cold_when_a_recorded_path_is_missing(
    warm: Warm, monkeypatch: pytest.MonkeyPatch, missing: str
):
    """Registered where the interpreter or the checkout was elsewhere: the command starts the
    engine cold with the worker's interpreter (its process's parent's) and says why in one line,
    instead of failing before any Python runs."""
    monkeypatch.delenv("DEPLOYFLOW_WARM_START", raising=False)
    argv = shlex.split(warm_start_command(["flows/deploy.py"])["command"])
    recorded = sys.executable if missing == "interpreter" else str(LAUNCHER)
    gone = str(warm.tmp / "moved" / Path(recorded).name)
    argv[argv.index(recorded)] = gone
    # The worker: a Python process that starts the command (as Prefect's process worker does).
    worker = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"

    result = subprocess.run(
        [sys.executable, "-c", worker, *argv],
        cwd=warm.tmp,
        env={**warm.env, "PATH": "/usr/bin:/bin"},  # no python3 of this environment on it
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert result.returncode == 1, result.stderr
    assert "Invalid flow run id" in result.stderr  # prefect.engine ran (no run id given here)
    said = [x for x in result.stderr.splitlines() if x.startswith("deployflow warm start:")]
    assert said == [
        f"deployflow warm start: {gone} (recorded by prefect deploy) is not on this machine;"
        " starting the run cold (python -m prefect.engine) with the interpreter of the worker,"
        f" {sys.executable}"
    ]
    assert not warm.warm_dir.exists()  # the launcher never ran: no zygote either


def test_a_launcher_whose_zygote_never_answers_exits_and_does_not_start_the_run_cold(warm: Warm):
    """A zygote that took the request and said nothing may have started the run's process:
    starting it cold as well could run the deploy twice, so the launcher exits 1."""
    env = {**warm.env, "DEPLOYFLOW_WARM_START_TIMEOUT": "1", "PREFECT__FLOW_RUN_ID": "a-run"}
    preload = [str(warm.flows / "flow.py")]
    warm.warm_dir.mkdir(mode=0o700)
    # Where the launcher, started with this interpreter and environment, looks for its zygote.
    path = warm.warm_dir / f"{zygote_key(sys.executable, preload, env)}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(1)
        launcher = subprocess.Popen(
            warm.argv(), cwd=warm.tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            silent.settimeout(30)
            conn, _ = silent.accept()
            with conn:
                conn.settimeout(30)
                received = b""
                while chunk := conn.recv(65536):  # the request, then the launcher's close
                    received += chunk
            code = launcher.wait(timeout=30)
        finally:
            launcher.kill()
            _, stderr_bytes = launcher.communicate()
    stderr = stderr_bytes.decode()

    assert b"a-run" in received  # the request reached the "zygote"
    assert code == 1, stderr
    assert "the zygote did not answer within 1 s; the run is not started again" in stderr
    assert COLD not in stderr
    assert "prefect" not in stderr  # no engine ran
    assert not list(warm.warm_dir.glob("*.log"))  # and no zygote was started
