"""The warm start (deployments/warm_start.py and warm_zygote.py) through a real Prefect server and a
real process worker: runs whose job command is the launcher complete with their result and logs,
take the run's own environment, pick up a changed source file, can be cancelled from the API, are
stopped when their launcher is SIGKILLed, and start cold when no zygote can start or when the
interpreter recorded by `prefect deploy` is not on the worker's machine.

The flows live in a temporary folder (the deployments' pull step changes into it), so changing a
source file touches nothing in the repository. One worker, one pool of its own, one zygote shared by
the tests in order.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import Cancelling

from deployflow.polling import wait_for
from deployments.warm_start import warm_start_command
from tests.e2e.team_conftest_helpers import (
    api_client,
    child_pids,
    clean_environ,
    process_alive,
    run_logs_once_finished,
    stop_zygotes,
)
from tests.integration.prefect.conftest import kill_group, start_in_own_group

pytestmark = pytest.mark.integration

POOL = "warm-start-test"
MISSING_PYTHON = "/nonexistent/venv/bin/python"

FLOWS = """
import os
import sys
import time

from prefect import flow, get_run_logger

import warm_helper


def facts():
    return {
        # The zygote imports the launcher's module for its protocol; a cold engine never does.
        "warm": "deployments.warm_start" in sys.modules,
        "pid": os.getpid(),
        "flow_run_id": os.environ.get("PREFECT__FLOW_RUN_ID"),
        "per_deployment": os.environ.get("WARM_TEST_SETTING"),
        "cwd": os.getcwd(),
        "module": __name__,
    }


@flow(persist_result=True)
def answer(x: int) -> dict:
    result = {"value": x + warm_helper.VALUE, **facts()}
    get_run_logger().info("warm-test answer %s", result)
    return result


@flow
def sleepy() -> None:
    get_run_logger().info("warm-test sleeping pid=%s", os.getpid())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.2)
"""


@dataclass
class Setup:
    client: SyncPrefectClient
    flows: Path
    warm_dir: Path
    worker_log: Path
    deployments: dict[str, UUID]
    storage: Path

    def run(self, deployment: str, parameters: dict[str, Any] | None = None) -> UUID:
        return self.client.create_flow_run_from_deployment(
            self.deployments[deployment], parameters=parameters or {}
        ).id

    def final(self, run_id: UUID, timeout: float = 120) -> FlowRun:
        def done() -> FlowRun | None:
            run = self.client.read_flow_run(run_id)
            return run if run.state is not None and run.state.is_final() else None

        try:
            return wait_for(done, timeout=timeout, interval=0.3, what="the run to end")
        except Exception as exc:
            raise AssertionError(f"run did not end\n{self.worker_log.read_text()}") from exc

    def answer(self, deployment: str, x: int) -> dict[str, Any]:
        """What the ``answer`` flow returned (its run id under ``run``)."""
        run = self.final(self.run(deployment, {"x": x}))
        assert run.state is not None
        assert run.state.is_completed(), f"{run.state}\n{self.worker_log.read_text()}"
        with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: self.storage}):
            result: dict[str, Any] = run.state.result()  # type: ignore[assignment]
        assert result["flow_run_id"] == str(run.id)
        return {**result, "run": run.id}

    def helper_value(self) -> int:
        """The VALUE warm_helper.py holds now (test_a_changed_source_file_is_picked_up changes
        it), which ``answer`` adds to its argument."""
        text = (self.flows / "warm_helper.py").read_text()
        return int(text.split("=", 1)[1])

    def sleeping_pid(self, run_id: UUID) -> int:
        """The pid the sleepy run logged once it runs."""

        def logged() -> int | None:
            from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

            logs = self.client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
            )
            for log in logs:
                if "warm-test sleeping pid=" in log.message:
                    return int(log.message.rsplit("=", 1)[1])
            return None

        return wait_for(logged, timeout=120, interval=0.3, what="the sleepy run to log its pid")


@pytest.fixture(scope="module")
def setup(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    flows = tmp_path_factory.mktemp("warm-flows")
    (flows / "warm_flows.py").write_text(FLOWS)
    (flows / "warm_helper.py").write_text("VALUE = 1\n")
    (flows / "broken.py").write_text("raise RuntimeError('this file cannot be imported')\n")
    home = tmp_path_factory.mktemp("warm-home")
    warm_dir = home / "warm"
    storage = home / "storage"
    env = {
        **clean_environ(),
        "PREFECT_API_URL": prefect_server,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_LOCAL_STORAGE_PATH": str(storage),
        "DEPLOYFLOW_WARM_DIR": str(warm_dir),
        "DEPLOYFLOW_WARM_IDLE_SECONDS": "300",
    }
    log = home / "worker.log"
    worker = start_in_own_group(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
         "--type", "process", "--name", "warm-worker", "--limit", "4"],
        env, log,
    )  # fmt: skip
    try:
        with api_client(prefect_server) as client:
            wait_for(lambda: pool_exists(client), timeout=120, interval=0.3, what="the pool")
            # The build step's commands (prefect.yaml). Preloaded files are relative to the
            # launcher's checkout, or absolute as here.
            command = build_step_command(flows / "warm_flows.py")
            broken = build_step_command(flows / "warm_flows.py", flows / "broken.py")
            # Registered where the interpreter was elsewhere than on the worker's machine.
            argv = shlex.split(command)
            argv[argv.index(sys.executable)] = MISSING_PYTHON
            moved = shlex.join(argv)

            def deployment(name: str, entry: str, command: str, env: dict[str, str]) -> UUID:
                flow_id = client.create_flow_from_name(entry)
                return client.create_deployment(
                    flow_id,
                    name,
                    entrypoint=f"warm_flows.py:{entry}",
                    work_pool_name=POOL,
                    path=str(flows),
                    pull_steps=[
                        {
                            "prefect.deployments.steps.set_working_directory": {
                                "directory": str(flows)
                            }
                        }
                    ],
                    job_variables={"command": command, "env": env},
                    enforce_parameter_schema=False,
                )

            deployments = {
                "answer": deployment("warm", "answer", command, {"WARM_TEST_SETTING": "a"}),
                "answer-b": deployment("warm-b", "answer", command, {"WARM_TEST_SETTING": "b"}),
                "broken": deployment("broken", "answer", broken, {}),
                "sleepy": deployment("sleepy", "sleepy", command, {}),
                "moved": deployment("moved", "answer", moved, {}),
            }
            yield Setup(client, flows, warm_dir, log, deployments, storage)
    finally:
        for child in child_pids(worker.pid):
            os.kill(child, signal.SIGKILL)
        kill_group(worker)
        stop_zygotes(warm_dir)


def build_step_command(*preload: Path) -> str:
    """The job command prefect.yaml's build step gives, with these files preloaded."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DEPLOYFLOW_WARM_START", raising=False)
        return warm_start_command([str(path) for path in preload])["command"]


def pool_exists(client: SyncPrefectClient) -> bool:
    try:
        client.read_work_pool(POOL)
    except Exception:
        return False
    return True


def test_a_run_started_warm_completes_with_its_result_and_its_own_environment(setup: Setup):
    first = setup.answer("answer", 20)
    second = setup.answer("answer", 30)
    other = setup.answer("answer-b", 40)

    value = setup.helper_value()
    assert (first["value"], second["value"], other["value"]) == (20 + value, 30 + value, 40 + value)
    # Forked from a zygote (it had the flow file imported), not a fresh interpreter.
    assert [first["warm"], second["warm"], other["warm"]] == [True] * 3, (
        setup.worker_log.read_text()
    )
    # Each run has its own environment: its run id (checked in answer()), its deployment's job
    # variables, its working directory (the pull step's), not the zygote's.
    assert (first["per_deployment"], other["per_deployment"]) == ("a", "b")
    assert first["cwd"] == str(setup.flows)
    # The flow file itself runs anew in each run, under the name a cold run gives it.
    assert first["module"] == second["module"] == "warm_flows"
    # Its logs reached the server.
    logs = wait_for(
        lambda: run_logs_once_finished(setup.client, other["run"]),
        timeout=30,
        interval=0.3,
        what="the run's logs",
    )
    said = f"'value': {40 + value}"
    assert any("warm-test answer" in message and said in message for _, message in logs)


def test_a_changed_source_file_is_picked_up(setup: Setup):
    old = setup.helper_value()
    assert setup.answer("answer", 1)["value"] == 1 + old
    (setup.flows / "warm_helper.py").write_text(f"VALUE = {old + 100}\n")

    after = setup.answer("answer", 1)

    # Never the zygote's old import: it refused the run and exited, and the run went to a fresh
    # zygote or, the file being only seconds old, started cold (test_warm_launcher.py checks
    # that a fresh zygote serves warm).
    assert after["value"] == 1 + old + 100


def test_cancelling_a_warm_run_from_the_api_stops_it(setup: Setup):
    run_id = setup.run("sleepy")
    pid = setup.sleeping_pid(run_id)
    # Started warm: the worker's process is the launcher, the run's process a zygote's child.
    assert setup.client.read_flow_run(run_id).infrastructure_pid not in (None, str(pid))
    assert process_alive(pid)

    setup.client.set_flow_run_state(run_id, Cancelling(), force=True)

    run = setup.final(run_id, timeout=90)
    assert run.state is not None
    assert run.state.is_cancelled(), run.state
    wait_for(lambda: not process_alive(pid), timeout=30, interval=0.2, what="the run's end")


def test_the_launcher_killed_stops_the_run_process(setup: Setup):
    run_id = setup.run("sleepy")
    pid = setup.sleeping_pid(run_id)
    launcher = int(setup.client.read_flow_run(run_id).infrastructure_pid or 0)
    assert launcher not in (0, pid)  # a cold start would have exec'ed the engine in its place
    assert process_alive(launcher)

    os.kill(launcher, signal.SIGKILL)

    wait_for(lambda: not process_alive(pid), timeout=10, interval=0.1, what="the run's end")
    run = setup.final(run_id, timeout=60)
    assert run.state is not None
    assert run.state.is_crashed(), run.state


def test_a_run_starts_cold_when_no_zygote_can_start(setup: Setup):
    result = setup.answer("broken", 5)

    assert result["value"] == 5 + setup.helper_value()
    assert not result["warm"]
    log = setup.worker_log.read_text()
    assert "deployflow warm start: the zygote exited 1 while starting" in log
    assert "starting the run cold (python -m prefect.engine)" in log


def test_a_run_starts_cold_when_the_recorded_interpreter_is_missing(setup: Setup):
    """prefect deploy ran with an interpreter the worker's machine does not have: the run starts
    cold with the worker's own interpreter instead of failing to start (no Python at all)."""
    result = setup.answer("moved", 7)

    assert result["value"] == 7 + setup.helper_value()
    assert not result["warm"]
    said = [x for x in setup.worker_log.read_text().splitlines() if MISSING_PYTHON in x]
    assert len(said) == 1, said
    assert "is not on this machine; starting the run cold" in said[0]
    assert f"the interpreter of the worker, {sys.executable}" in said[0]
