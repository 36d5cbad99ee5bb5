"""`deployflow sandbox`: up until SIGTERM, prints the exports the example spec needs."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployflow.polling import wait_for
from deployflow.spec import load_spec

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[3]


def test_sandbox_command_prints_exports_and_stops_everything(tmp_path: Path) -> None:
    shared = ("DEPLOYFLOW_DATA_DIR", "DEPLOYFLOW_DATABASE_URL")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "sandbox", "--state-dir", str(tmp_path)],
        env={k: v for k, v in os.environ.items() if k not in shared},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    exports: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the sandbox prints "# Ctrl-C" once it is up
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if line.startswith("# Ctrl-C"):
                break
        # Its own tracking database: another sandbox or demo on the machine never collides.
        assert exports["DEPLOYFLOW_DATA_DIR"] == str(tmp_path.resolve() / "tracking")
        spec = load_spec(REPO / "examples" / "sandbox.yaml", env={**os.environ, **exports})
        served = httpx.get(spec.router.frontend_url + "/api/items", timeout=5).json()
        assert served["version"] == "v1"
        pids = [
            int(p.read_text().split('"pid": ')[1].split(",")[0])
            for p in (tmp_path / "instances").glob("*.json")
        ]
        assert pids
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # drains and closes stdout
    assert proc.returncode == 0

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"

    wait_for(lambda: all(gone(p) for p in pids), timeout=10, what="app processes gone")
