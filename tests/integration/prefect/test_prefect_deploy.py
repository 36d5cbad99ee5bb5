"""prefect.yaml through the real CLI: `prefect deploy --all`, then a process worker runs the flow.

Everything runs against the session's real Prefect server: the work pool is created and the
deployment registered by subprocesses of the Prefect CLI (as a person would), the deployment is
read back through the API, and one ``prefect worker start --run-once`` executes a flow run of it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import Deployment

from deployflow.polling import wait_for
from tests.integration.prefect.conftest import (
    REPO_ROOT,
    PrefectCLI,
    kill_group,
    start_in_own_group,
)

pytestmark = pytest.mark.integration

POOL = "deployflow-process"
FLOW_PARAMETERS = ["spec_path", "version", "environment", "strategy", "dry_run"]


@pytest.fixture(scope="module")
def deployment(prefect_cli: PrefectCLI) -> Iterator[Deployment]:
    """The ``deploy/deploy`` deployment, registered by ``prefect deploy --all`` from the repo."""
    prefect_cli("work-pool", "create", POOL, "--type", "process")
    prefect_cli("--no-prompt", "deploy", "--all")
    with get_client(sync_client=True) as client:
        yield client.read_deployment_by_name("deploy/deploy")


def test_deployment_matches_prefect_yaml(deployment: Deployment):
    assert deployment.entrypoint == "flows/deploy.py:deploy"
    assert deployment.work_pool_name == POOL
    assert deployment.parameters == {
        "spec_path": "examples/sandbox.yaml",
        "environment": "sandbox",
        "strategy": "auto",
        "dry_run": False,
    }
    assert set(deployment.tags) == {"deployflow", "release"}
    assert "rollback" in (deployment.description or "")
    assert deployment.schedules == []
    # The pull step was resolved at deploy time to this checkout (see prefect.yaml).
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT.resolve())}}
    ]


def test_parameter_form_is_described_typed_and_requires_version(deployment: Deployment):
    schema = deployment.parameter_openapi_schema
    properties = schema["properties"]

    assert set(FLOW_PARAMETERS) <= set(properties)
    # Descriptions come from the Args section of the flow's Google-style docstring.
    for name, prop in properties.items():
        assert prop.get("description"), f"parameter {name} has no description"
    assert set(_enum_of(schema, "strategy")) == {"auto", "canary", "direct"}
    assert "version" in schema["required"]
    assert deployment.enforce_parameter_schema is True


def _enum_of(schema: dict, name: str) -> list[str]:
    prop = schema["properties"][name]
    if "enum" in prop:
        return prop["enum"]
    # pydantic may put a Literal alias in definitions and reference it.
    ref = (prop.get("allOf") or [prop])[0]["$ref"].rsplit("/", 1)[-1]
    return schema["definitions"][ref]["enum"]


def test_process_worker_runs_the_deployment_and_the_flow_fails_naming_the_spec_problem(
    deployment: Deployment, prefect_env: dict[str, str], tmp_path: Path
):
    missing_spec = tmp_path / "no-such-spec.yaml"
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"spec_path": str(missing_spec), "version": "v1"}
        )
        worker_log = tmp_path / "worker.log"
        worker = start_in_own_group(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
            prefect_env,
            worker_log,
        )
        try:
            final = wait_for(
                lambda: _final_state(client, run.id),
                timeout=60,
                interval=0.5,
                what=f"flow run {run.id} to finish",
            )
        except Exception:
            pytest.fail(f"flow run did not finish; worker log:\n{worker_log.read_text()}")
        finally:
            kill_group(worker)

        assert final.is_failed(), f"{final.type}: {final.message}\n{worker_log.read_text()}"
        assert str(missing_spec) in (final.message or "")
        assert "SpecError" in (final.message or "")
        assert "cannot read the spec" in (final.message or "")
        # The run got as far as the load-spec task, which is where the SpecError came from.
        [task_run] = client.read_task_runs(flow_run_filter=_by_id(run.id), task_run_filter=None)
        assert task_run.name.startswith("load-spec")
        assert task_run.state is not None
        assert task_run.state.is_failed()


def _final_state(client, run_id):
    state = client.read_flow_run(run_id).state
    return state if state is not None and state.is_final() else None


def _by_id(run_id):
    return FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
