"""The whole sandbox: comes up wired together, and leaves no process behind whatever happens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployflow.processes import ProcessRecord
from deployflow.providers.base import RouterState
from deployflow.sandbox.supervisor import (
    ENV_FLAGS_FILE,
    ENV_FRONTEND_URL,
    ENV_HAPROXY_SOCKET,
    ENV_PROMETHEUS_URL,
    ENV_SCRAPE_TARGETS,
    ENV_STATE_DIR,
    Sandbox,
    sandbox_target,
)

pytestmark = pytest.mark.integration


def test_sandbox_serves_v1_through_haproxy_with_metrics_and_cleans_up(tmp_path, process_gone):
    with Sandbox(tmp_path / "sbx", rps=20, traffic_max_duration=120) as sandbox:
        env = sandbox.env_vars()
        assert env[ENV_STATE_DIR] == str((tmp_path / "sbx").resolve())
        assert Path(env[ENV_HAPROXY_SOCKET]).is_socket()
        assert httpx.get(f"{env[ENV_PROMETHEUS_URL]}/-/ready").status_code == 200
        assert httpx.get(f"{env[ENV_FRONTEND_URL]}/healthz").json()["version"] == "v1"
        # The flagd file versions started with --flags read: there, with every flag off.
        assert json.loads(Path(env[ENV_FLAGS_FILE]).read_text())["flags"] == {}
        # What the deploy flow does: its own objects, built only from files and env_vars().
        flow_target = sandbox_target(Path(env[ENV_STATE_DIR]))
        (v1,) = flow_target.instances()
        assert flow_target.scrape_targets_file == Path(env[ENV_SCRAPE_TARGETS])
        assert sandbox.router().state() == RouterState(v1.address, None, 0)
        assert sandbox.wait_for_metrics("v1", timeout=30) > 0
        pids = sandbox.pids()
        assert len(pids) == 4  # v1, HAProxy, Prometheus, Alertmanager
        traffic = sandbox.traffic
        assert traffic is not None
    assert all(process_gone(pid) for pid in pids)
    assert not traffic.running
    assert traffic.status_counts().get(200, 0) > 0
    assert set(traffic.status_counts()) == {200}
    assert traffic.transport_errors == 0


def _crashed_run_leftover(state_dir: Path) -> subprocess.Popen[bytes]:
    """A process recorded as a running version, as a sandbox killed with SIGKILL leaves it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    record = ProcessRecord.of(proc.pid).to_json()
    (state_dir / "instances").mkdir(parents=True)
    (state_dir / "instances" / "v0.json").write_text(
        json.dumps({**record, "port": 1, "host": "127.0.0.1", "version": "v0"})
    )
    return proc


def _run_failing_body(state_dir: Path, error: BaseException, seen_pids: list[int]) -> None:
    with Sandbox(state_dir, rps=20) as sandbox:
        seen_pids.extend(sandbox.pids())
        raise error


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_leftovers_are_killed_and_nothing_survives_a_failing_body(tmp_path, error, process_gone):
    state_dir = tmp_path / "sbx"
    leftover = _crashed_run_leftover(state_dir)
    pids: list[int] = []
    with pytest.raises(type(error)):
        _run_failing_body(state_dir, error, pids)
    assert leftover.wait(timeout=5) is not None
    assert len(pids) == 4  # v1, HAProxy, Prometheus, Alertmanager; the leftover not counted
    assert all(process_gone(pid) for pid in pids)
    assert list((state_dir / "instances").glob("*.json")) == []
