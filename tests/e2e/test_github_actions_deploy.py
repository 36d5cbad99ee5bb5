"""Whole deploys through the Prefect flow with a github-actions target, against the local Actions
API (deployflow/fakes/github_actions_api.py) on loopback.

The real ``deploy`` flow runs: it loads the spec, builds the github-actions target from it
through the registry (token from GITHUB_TOKEN), dispatches and follows the workflows, checks the
deployed version's health over HTTP, and closes the target at the end. Traffic and metrics are
not what this module tests, so the router and the metrics are FakeService's in-memory ones
(swapped in after ``connect``), and the strategy is direct. In order: v2 is deployed by a
successful run and v1 removed by the stop workflow; v3's run fails; v4's run never finishes
and is cancelled at the workflow's timeout; v5's run succeeds but logs an error line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prefect import Task

import flows.deploy
import flows.deploy_steps
import tasks.connect
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.fakes.github_actions_api import (
    FakeDeployedService,
    FakeGitHubActions,
    ScriptedRun,
)
from deployflow.providers.base import Instance
from deployflow.providers.github_actions import GitHubActionsTarget
from deployflow.release import outcome_of
from flows.deploy import deploy

pytestmark = pytest.mark.e2e

REPO = "acme/shop"
TOKEN = "ghp_e2eTokenNeverShown5678"
RUN_NAME = "Deploy ${{ inputs.version }} [${{ inputs.deploy_id }}]"
START_TIMEOUT = 1.5  # seconds the start workflow gets: v4's run never finishes


def spec_data(github: FakeGitHubActions, service: FakeDeployedService) -> dict[str, Any]:
    return {
        "service": "shop",
        "target": {
            "kind": "github-actions",
            "repository": REPO,
            "base_url": github.base_url,
            "start": {
                "workflow": "deploy.yml",
                "inputs": {"version": "{version}", "environment": "{environment}"},
                "timeout": f"{START_TIMEOUT}s",
            },
            "stop": {"workflow": "undeploy.yml", "inputs": {"version": "{version}"}},
            "correlation_input": "deploy_id",
            "instance": {"url": service.url_template},
            "status_url": f"{service.base_url}/versions",
            "error_patterns": [r"\bERROR\b"],
            "poll_interval": "50ms",
            "start_timeout": "5s",
        },
        # Replaced by FakeService's in-memory router and metrics after connect (see the module).
        "router": {"kind": "haproxy", "admin_socket": "/nonexistent/haproxy.sock",
                   "frontend_url": "http://frontend.test"},
        "metrics": {"kind": "prometheus", "url": "http://prometheus.test",
                    "queries": {"error_rate": "e{version}", "p95_latency": "p{version}",
                                "request_count": "r{version}"}},
        "analysis": {"interval": "5ms", "window": "1s", "baseline_window": "1s",
                     "min_requests": 10},
        "strategy": {"kind": "direct", "observe": "10ms"},
    }  # fmt: skip


@pytest.fixture(scope="module")
def deployed() -> Iterator[FakeDeployedService]:
    with FakeDeployedService() as service:
        yield service


@pytest.fixture(scope="module")
def github(deployed: FakeDeployedService) -> Iterator[FakeGitHubActions]:
    with FakeGitHubActions(token=TOKEN) as fake:
        fake.add_workflow(
            REPO,
            "deploy.yml",
            inputs={"version": True, "environment": True, "deploy_id": False},
            run_name=RUN_NAME,
            on_success=deployed.deploy,
        )
        fake.add_workflow(
            REPO,
            "undeploy.yml",
            inputs={"version": True, "deploy_id": False},
            run_name=RUN_NAME,
            on_success=deployed.remove,
        )
        yield fake


@pytest.fixture(scope="module")
def fakes() -> FakeService:
    return FakeService()


@pytest.fixture(scope="module")
def spec_file(
    tmp_path_factory: pytest.TempPathFactory,
    github: FakeGitHubActions,
    deployed: FakeDeployedService,
) -> Path:
    path = tmp_path_factory.mktemp("spec") / "shop.yaml"
    path.write_text(yaml.safe_dump(spec_data(github, deployed)))
    return path


@pytest.fixture(scope="module")
def built(
    prefect_server: str,
    fakes: FakeService,
    github: FakeGitHubActions,
    deployed: FakeDeployedService,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[Backends]]:
    """The runs' backends: the target as the spec builds it, the router and metrics FakeService's;
    v1 deployed and serving before the first test. Retries keep their count, not their pause."""
    runs: list[Backends] = []
    real_connect = tasks.connect.connect

    def connect(*args: Any, **kwargs: Any) -> Backends:
        backends = real_connect(*args, **kwargs)
        swapped = backends.model_copy(update={"router": fakes.router, "metrics": fakes.metrics})
        runs.append(swapped)
        return swapped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.connect, "connect", connect)
        patch.setenv("GITHUB_TOKEN", TOKEN)
        patch.setenv("DEPLOYFLOW_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        patch.delenv("DEPLOYFLOW_DATABASE_URL", raising=False)
        for value in [*vars(flows.deploy).values(), *vars(flows.deploy_steps).values()]:
            if isinstance(value, Task) and value.retries:
                patch.setattr(value, "retry_delay_seconds", 0)
        deployed.deploy({"version": "v1"})
        # Where the status URL lists v1 (every version shares the fake's address).
        address = urlsplit(deployed.base_url)
        fakes.router.promote(Instance("v1", str(address.hostname), int(address.port or 80)))
        yield runs


def run(spec_file: Path, version: str) -> dict:
    state = deploy(
        environment="sandbox", spec_path=str(spec_file), version=version, return_state=True
    )
    data = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(data, dict), f"the flow crashed: {data!r}"
    return data


def dispatched(github: FakeGitHubActions, version: str) -> list[tuple[str, str | None]]:
    """(workflow, conclusion) of each run dispatched for ``version``."""
    return [
        (r.workflow.file, r.data["conclusion"])
        for r in github.runs
        if r.inputs.get("version") == version
    ]


def closed(backends: Backends) -> bool:
    target = backends.target
    assert isinstance(target, GitHubActionsTarget)
    return target._client.is_closed and target._plain.is_closed


def test_a_successful_run_deploys_the_version_and_the_old_one_is_removed(
    built: list[Backends], github: FakeGitHubActions, deployed: FakeDeployedService, spec_file
) -> None:
    result = run(spec_file, "v2")
    assert result["status"] == "succeeded", result["message"]
    assert result["strategy"] == "direct"
    assert result["previous_version"] == "v1"
    assert dispatched(github, "v2") == [("deploy.yml", "success")]
    assert dispatched(github, "v1") == [("undeploy.yml", "success")]
    assert deployed.deployed == {"v2"}
    assert TOKEN not in repr(result)
    # The deploy closed its target's HTTP clients when it ended.
    assert closed(built[-1])


def test_a_failed_run_fails_the_deploy_with_the_failing_job_and_log_lines(
    built: list[Backends],
    fakes: FakeService,
    github: FakeGitHubActions,
    deployed: FakeDeployedService,
    spec_file: Path,
) -> None:
    log = "kubectl apply -f shop.yaml\nERROR: quota exceeded for cpu\nexit 1"
    failing = ScriptedRun(conclusion="failure", failed_step="Apply", log=log)
    github.script(REPO, "deploy.yml", failing)
    before = fakes.router.state()
    result = run(spec_file, "v3")
    assert result["status"] == "failed", result["message"]
    message = result["message"]
    assert message.startswith("v3 did not start: github-actions target: start of v3: workflow")
    assert "ended with conclusion failure" in message
    assert "failing job 'deploy' (failure, step 'Apply')" in message
    assert "ERROR: quota exceeded for cpu" in message
    assert "kubectl apply" not in message
    assert result["stages"] == []
    assert fakes.router.state() == before
    assert deployed.deployed == {"v2"}
    # A run that failed is final: the execute step does not dispatch another.
    assert dispatched(github, "v3") == [("deploy.yml", "failure")]
    assert closed(built[-1])


def test_a_run_that_does_not_finish_in_time_is_cancelled_and_fails_the_deploy(
    built: list[Backends], github: FakeGitHubActions, deployed: FakeDeployedService, spec_file
) -> None:
    github.script(REPO, "deploy.yml", ScriptedRun(never_completes=True))
    result = run(spec_file, "v4")
    assert result["status"] == "failed", result["message"]
    assert f"did not complete within {START_TIMEOUT:g}s" in result["message"]
    assert "it was cancelled" in result["message"]
    assert dispatched(github, "v4") == [("deploy.yml", "cancelled")]
    assert deployed.deployed == {"v2"}
    assert result["stages"] == []


def test_a_successful_run_that_logs_an_error_fails_the_deploy_and_is_undone(
    built: list[Backends], github: FakeGitHubActions, deployed: FakeDeployedService, spec_file
) -> None:
    noisy = ScriptedRun(log="Applying\nERROR: post-deploy hook failed (ignored)\nDone")
    github.script(REPO, "deploy.yml", noisy)
    result = run(spec_file, "v5")
    assert result["status"] == "failed", result["message"]
    assert "succeeded, but its log matches error_patterns" in result["message"]
    assert "ERROR: post-deploy hook failed (ignored)" in result["message"]
    assert "v5 was removed with the stop workflow" in result["message"]
    assert deployed.deployed == {"v2"}
    assert result["stages"] == []
    assert dispatched(github, "v5") == [("deploy.yml", "success"), ("undeploy.yml", "success")]
