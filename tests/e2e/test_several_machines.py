"""The several-machine layout of docs/team-server.md, on separate hosts made of Linux network
namespaces on this machine (tests/e2e/netns.py):

- ``server`` (10.213.0.1): PostgreSQL and the Prefect server on it; deployflow's tracking database
  is another database of the same PostgreSQL;
- ``worker1``, ``worker2`` (.2, .3): one ``prefect worker start`` each (process workers);
- ``service`` (.4): the service's router (HAProxy, its runtime API over TCP), its versions and
  Prometheus (``deployflow sandbox --host``), traffic flowing.

The pool and the ``deploy`` deployment are registered with the Prefect CLI from a worker host
(prefect.yaml). Deploys run on the workers, never on the service host: the target is the spec's
own commands, run on the service host (``ip netns exec``, as a team would use ssh), the router is
driven over the network, the metrics come from Prometheus over the network. In order: v2 is
released, v3 (20% errors) is rolled back; then the Prefect server is restarted while v4 is in its
canary stage: that run ends correctly, or the next deploy reconciles it.

Skipped with the reason where network namespaces cannot be made (not root, no ``ip``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from prefect.client.schemas.objects import FlowRun

from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.providers.haproxy import HAProxyRouter
from deployflow.sandbox.postgres import LocalPostgres
from tests.e2e.conftest import FAST_EVIDENCE
from tests.e2e.netns import NETWORK, Host, NamespacesUnavailable, hosts, relay_argv
from tests.e2e.team_conftest_helpers import (
    POOL,
    api_client,
    clean_environ,
    executing_workers,
    stop_zygotes,
    tracked_by_flow_run,
)
from tests.integration.prefect.conftest import REPO_ROOT, kill_group, start_in_own_group

pytestmark = pytest.mark.e2e

EXAMPLE_SPEC = REPO_ROOT / "examples" / "sandbox.yaml"
HOOK = REPO_ROOT / "examples" / "hooks" / "sandbox_target.py"
PREFECT_PORT = 4200
RUN_TIMEOUT = 150


@dataclass
class Layout:
    """The hosts and what the test process reaches them by."""

    hosts: dict[str, Host]
    api_url: str  # the Prefect API, through the relay
    postgres: LocalPostgres
    tracking_url: str  # through PostgreSQL's Unix socket
    sandbox_env: dict[str, str]
    spec_path: Path
    tmp: Path
    server: subprocess.Popen[bytes] | None = None

    def start_server(self) -> None:
        server = self.hosts["server"]
        env = {
            **clean_environ(),
            "PREFECT_HOME": str(self.tmp / "server-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://postgres@{server.address}:{self.postgres.port}/prefect"
            ),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        argv = server.exec(sys.executable, "-m", "prefect", "server", "start",
                           "--host", server.address, "--port", str(PREFECT_PORT))  # fmt: skip
        self.server = start_in_own_group(argv, env, self.tmp / "server.log")

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.server is not None
            if self.server.poll() is not None:
                raise AssertionError((self.tmp / "server.log").read_text())
            try:
                return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=240, interval=0.5, what="the Prefect server on its host")

    def stop_server(self) -> None:
        if self.server is not None:
            kill_group(self.server)
            self.server = None

    def worker_env(self) -> dict[str, str]:
        server = self.hosts["server"]
        return {
            **clean_environ(),
            **self.sandbox_env,
            "PREFECT_API_URL": f"http://{server.address}:{PREFECT_PORT}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "DEPLOYFLOW_DATABASE_URL": (
                f"postgresql+psycopg://postgres@{server.address}:{self.postgres.port}/tracking"
            ),
            "DEPLOYFLOW_SERVICE_HOST": self.hosts["service"].name,
            # The warm start's zygotes (one per worker host: its network namespace is part of
            # their key), stopped at the end.
            "DEPLOYFLOW_WARM_DIR": str(self.tmp / "warm"),
            "DEPLOYFLOW_OBSERVE": "4s",
            **FAST_EVIDENCE,
        }

    def run(self, version: str) -> UUID:
        with api_client(self.api_url) as client:
            deployment = client.read_deployment_by_name("deploy/deploy")
            return client.create_flow_run_from_deployment(
                deployment.id,
                parameters={
                    "version": version,
                    "spec_path": str(self.spec_path),
                    "environment": "sandbox",
                },
            ).id

    def finished(self, run_id: UUID, timeout: float = RUN_TIMEOUT) -> FlowRun:
        def final() -> FlowRun | None:
            try:
                with api_client(self.api_url) as client:
                    run = client.read_flow_run(run_id)
            except Exception:  # the server restarting
                return None
            return run if run.state is not None and run.state.is_final() else None

        try:
            return wait_for(final, timeout=timeout, interval=1, what=f"run {run_id} to end")
        except Exception as exc:
            logs = "\n".join(p.read_text()[-4000:] for p in self.tmp.glob("worker*.log"))
            raise AssertionError(f"the run did not end\n{logs}") from exc

    def router(self) -> HAProxyRouter:
        # The test process reads the router through HAProxy's Unix socket (files are shared).
        return HAProxyRouter(
            Path(self.sandbox_env["DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET"]),
            frontend_url=self.sandbox_env["DEPLOYFLOW_SANDBOX_FRONTEND_URL"],
        )


def spec_for_the_layout(path: Path) -> Path:
    """examples/sandbox.yaml with the target run on the service host by the spec's own commands
    (examples/hooks/sandbox_target.py through ``ip netns exec``, as ssh would) and the router's
    runtime API over TCP; two stages, no pre-checks or on-call (not what this module tests)."""
    spec = yaml.safe_load(EXAMPLE_SPEC.read_text())

    def hook(*args: str) -> dict[str, Any]:
        argv = ["ip", "netns", "exec", "${DEPLOYFLOW_SERVICE_HOST}", sys.executable, str(HOOK)]
        return {"argv": [*argv, *args], "timeout": "30s"}

    spec["target"] = {
        "kind": "command",
        "start": hook("start", "{version}"),
        "stop": hook("stop", "{version}"),
        "status": hook("status"),
        "logs": hook("logs", "{version}", "{lines}"),
        "env": {
            "SANDBOX_STATE_DIR": "${DEPLOYFLOW_SANDBOX_STATE_DIR}",
            "SANDBOX_HOST": "${DEPLOYFLOW_SANDBOX_HOST}",
            "DEPLOYFLOW_DEMO_FAULTS": "${DEPLOYFLOW_DEMO_FAULTS:-}",
        },
        "health_path": "/healthz",
        "start_timeout": "30s",
    }
    router = spec["router"]
    del router["admin_socket"]
    router["admin_address"] = "${DEPLOYFLOW_SANDBOX_HAPROXY_ADDRESS}"
    spec["strategy"]["steps"] = [50, 100]
    for section in ("pre_checks", "notifications"):
        spec.pop(section, None)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    tmp = tmp_path_factory.mktemp("several-machines")
    names = ("server", "worker1", "worker2", "service")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with hosts(names) as found:
            server, service = found["server"], found["service"]
            postgres = LocalPostgres(
                host=server.address, clients=NETWORK, command_prefix=server.exec()
            )
            with postgres:
                postgres.create_database("prefect")
                postgres.create_database("tracking")
                socket = tmp / "api.sock"
                port = free_port()
                processes.append(start_in_own_group(
                    server.exec(*relay_argv("to-tcp", str(socket),
                                            f"{server.address}:{PREFECT_PORT}")),
                    clean_environ(), tmp / "relay-server.log",
                ))  # fmt: skip
                processes.append(start_in_own_group(
                    relay_argv("to-unix", f"127.0.0.1:{port}", str(socket)),
                    clean_environ(), tmp / "relay-here.log",
                ))  # fmt: skip
                state = tmp / "sandbox"
                processes.append(start_in_own_group(
                    service.exec(sys.executable, "-m", "deployments.cli", "sandbox",
                                 "--state-dir", str(state), "--host", service.address),
                    clean_environ(), tmp / "sandbox.log",
                ))  # fmt: skip
                ready = Layout(
                    found, f"http://127.0.0.1:{port}/api", postgres,
                    postgres.socket_url("tracking"), {}, spec_for_the_layout(tmp / "spec.yaml"),
                    tmp,
                )  # fmt: skip
                ready.start_server()
                try:
                    yield from _ready(ready, state, processes)
                finally:
                    ready.stop_server()
    except NamespacesUnavailable as exc:
        pytest.skip(f"separate hosts cannot be made here: {exc}")
    finally:
        for process in processes:
            kill_group(process)
        stop_zygotes(tmp / "warm")


def _ready(
    layout: Layout, state: Path, processes: list[subprocess.Popen[bytes]]
) -> Iterator[Layout]:
    sandbox_json = state / "sandbox.json"
    wait_for(sandbox_json.exists, timeout=120, interval=0.5, what="the sandbox on its host")
    layout.sandbox_env = {
        **json.loads(sandbox_json.read_text()),
        "DEPLOYFLOW_SANDBOX_HOST": layout.hosts["service"].address,
        "DEPLOYFLOW_DEMO_FAULTS": json.dumps({"v3": {"error_rate": 0.2}}),
    }
    assert layout.sandbox_env["DEPLOYFLOW_SANDBOX_HAPROXY_ADDRESS"].startswith("10.213.0.4:")
    layout.wait_healthy()
    env = layout.worker_env()
    worker = layout.hosts["worker1"]
    for args in (
        ("work-pool", "create", POOL, "--type", "process"),
        ("--no-prompt", "deploy", "--name", "deploy"),
    ):
        done = subprocess.run(
            worker.exec(sys.executable, "-m", "prefect", *args),
            cwd=REPO_ROOT, env={**env, "PREFECT_HOME": str(layout.tmp / "cli-home")},
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    for name in ("worker1", "worker2"):
        host = layout.hosts[name]
        processes.append(start_in_own_group(
            host.exec(sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                      "--name", name, "--type", "process", "--limit", "1"),
            {**env, "PREFECT_HOME": str(layout.tmp / f"{name}-home"),
             "DEPLOYFLOW_DATA_DIR": str(layout.tmp / f"{name}-data")},
            layout.tmp / f"{name}.log",
        ))  # fmt: skip
    yield layout


def outcome_tags(run: FlowRun) -> list[str]:
    return [t for t in run.tags if t.startswith("outcome:")]


def test_a_release_and_a_rollback_run_on_worker_hosts_against_the_service_host(
    layout: Layout,
) -> None:
    released = layout.finished(layout.run("v2"))
    assert released.state is not None
    assert released.state.is_completed(), released.state.message
    row = tracked_by_flow_run(layout.tracking_url, released.id)
    assert (row["status"], row["previous_version"]) == ("succeeded", "v1")
    assert [s["weight"] for s in row["stages"]] == [50, 100]

    bad = layout.finished(layout.run("v3"))
    assert bad.state is not None
    assert bad.state.is_failed(), bad.state.message
    assert outcome_tags(bad) == ["outcome:rolled-back"]
    row = tracked_by_flow_run(layout.tracking_url, bad.id)
    assert (row["status"], row["previous_version"]) == ("rolled_back", "v2")

    # Both ran on worker hosts (never on the service's), and the router serves v2 alone at the
    # service host's address.
    with api_client(layout.api_url) as client:
        ran_on = wait_for(
            lambda: executing_workers(client, [released.id, bad.id]),
            timeout=30,
            interval=0.5,
            what="the workers' executed-flow-run events",
        )
    assert set(ran_on.values()) <= {"worker1", "worker2"}
    state = layout.router().state()
    assert state.canary is None or state.canary_weight == 0
    assert state.stable.startswith("10.213.0.4:")


def test_a_prefect_server_restart_mid_rollout_ends_the_run_or_the_next_deploy_reconciles(
    layout: Layout,
) -> None:
    run_id = layout.run("v4")

    def in_its_canary() -> bool:
        try:
            row = tracked_by_flow_run(layout.tracking_url, run_id)
        except ValueError:  # no row yet
            return False
        return bool(row.get("canary_weight"))

    wait_for(in_its_canary, timeout=RUN_TIMEOUT, interval=0.5, what="v4 in its canary stage")
    layout.stop_server()
    layout.start_server()
    layout.wait_healthy()

    run = layout.finished(run_id, timeout=RUN_TIMEOUT * 2)
    row = tracked_by_flow_run(layout.tracking_url, run_id)
    if run.state is not None and run.state.is_completed():
        assert row["status"] == "succeeded", row["summary"]
        return
    # Otherwise the next deploy settles what the interrupted one left and releases.
    after = layout.finished(layout.run("v5"))
    assert after.state is not None
    assert after.state.is_completed(), after.state.message
    row = tracked_by_flow_run(layout.tracking_url, run_id)
    assert row["status"] not in ("pending", "running"), row
    assert not row.get("canary_weight"), row
