"""prefect.yaml as Prefect reads it: two deployments, the inactive nightly dry run with its own
parameters, and the deploy-from-git pull steps cloning this repository into an empty folder."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.deployments.steps.pull import git_clone
from prefect.deployments.steps.utility import run_shell_script
from prefect.utilities.importtools import import_object
from prefect.utilities.templating import apply_values

from deployments.warm_start import COLD_SCRIPT, WARM_SCRIPT
from tests.integration.prefect.conftest import REPO_ROOT

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


def test_both_deployments_have_the_nightly_dry_run_inactive_with_its_own_parameters(config):
    model = PrefectYamlModel.model_validate(config)

    names = [d.name for d in model.deployments]
    assert names == [
        "deploy",
        "deploy-from-git",
        "rollback",
        "retire-kept-versions",
        "dora-weekly",
        "after-rollback",
    ]
    for deployment in model.deployments[:2]:
        assert deployment.entrypoint == "flows/deploy.py:deploy"
        [nightly] = deployment.schedules or []
        assert nightly.active is False  # never fires in a test or on a fresh server
        assert nightly.cron == "0 2 * * *"
        nightly_run = {"version": "nightly", "environment": "staging", "dry_run": True}
        assert nightly.parameters == nightly_run
    rollback = model.deployments[2]
    assert rollback.entrypoint == "flows/manual_rollback.py:manual_rollback"
    assert rollback.schedules == []  # started by people only


def test_deploy_from_git_clones_the_recorded_repository_and_branch(
    config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    branch = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "HEAD"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if branch == "HEAD":
        pytest.skip("a detached checkout has no branch to clone")
    # The repository is given (as an operator would); the branch is the checkout's, by default.
    monkeypatch.setenv("DEPLOYFLOW_GIT_REPOSITORY", str(REPO_ROOT))
    monkeypatch.delenv("DEPLOYFLOW_GIT_BRANCH", raising=False)
    monkeypatch.chdir(REPO_ROOT)
    outputs: dict[str, Any] = {}
    for step in config["build"]:
        [(name, inputs)] = step.items()
        if name != "prefect.deployments.steps.run_shell_script":
            continue  # the warm start's command: test_the_checkouts_deployments_start_warm
        result = asyncio.run(run_shell_script(inputs["script"], stream_output=False))
        outputs[inputs["id"]] = result
    assert outputs["repository"]["stdout"] == str(REPO_ROOT)
    assert outputs["branch"]["stdout"] == branch

    [from_git] = [d for d in config["deployments"] if d["name"] == "deploy-from-git"]
    clone_step, chdir_step = apply_values(from_git["pull"], outputs, remove_notset=False)
    inputs = dict(clone_step["prefect.deployments.steps.git_clone"])
    assert inputs.pop("id") == "clone"
    assert inputs == {"repository": str(REPO_ROOT), "branch": branch}
    monkeypatch.chdir(tmp_path)  # a worker's flow run starts in an empty folder
    cloned = git_clone(**inputs)

    assert (Path(cloned["directory"]) / "flows" / "deploy.py").is_file()
    directory = chdir_step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert apply_values(directory, {"clone": cloned}) == cloned["directory"]


def test_the_checkouts_deployments_start_warm(config, monkeypatch: pytest.MonkeyPatch):
    """Every deployment that runs from this checkout has the warm launcher as its job command
    (deployments/warm_start.py), with the interpreter that ran `prefect deploy`; the clone's
    deployment keeps Prefect's default. DEPLOYFLOW_WARM_START=0 at registration gives the cold
    engine command."""
    [warm] = [s for s in config["build"] if "deployments.warm_start.warm_start_command" in s]
    inputs = dict(warm["deployments.warm_start.warm_start_command"])
    assert inputs.pop("id") == "warm"
    # What `prefect deploy` does with the step (it imports it from the repository root).
    step = import_object("deployments.warm_start.warm_start_command")
    monkeypatch.delenv("DEPLOYFLOW_WARM_START", raising=False)
    outputs = {"warm": step(**inputs)}

    # Through /bin/sh, which starts the run cold when either path is missing on the worker.
    assert shlex.split(outputs["warm"]["command"]) == [
        "/bin/sh", "-c", WARM_SCRIPT, "deployflow-warm-start",
        sys.executable, str(REPO_ROOT / "deployments" / "warm_start.py"),
        "--preload", "flows/deploy.py", "--preload", "flows/manual_rollback.py",
    ]  # fmt: skip
    for deployment in config["deployments"]:
        job_variables = apply_values(deployment["work_pool"]["job_variables"], outputs)
        if deployment["name"] == "deploy-from-git":  # a fresh clone per run: nothing to keep warm
            assert "command" not in job_variables
        else:
            assert job_variables["command"] == outputs["warm"]["command"], deployment["name"]
    monkeypatch.setenv("DEPLOYFLOW_WARM_START", "0")
    assert shlex.split(step(**inputs)["command"]) == [
        "/bin/sh", "-c", COLD_SCRIPT, "deployflow-cold-start", sys.executable
    ]  # fmt: skip


def test_the_team_deployments_choose_no_service_and_no_environment(config):
    """A form sent without picking a service must not release the demo (issue 22)."""
    from deployments.serve import DEFAULT_PARAMETERS

    for deployment in config["deployments"][:2]:
        parameters = deployment.get("parameters", {})
        assert "spec_path" not in parameters, deployment["name"]
        assert "environment" not in parameters, deployment["name"]
        assert "sandbox" not in str(parameters)
    assert "spec_path" not in DEFAULT_PARAMETERS
    assert "environment" not in DEFAULT_PARAMETERS


def test_a_run_without_a_service_is_refused_naming_both_ways_to_give_one(prefect_server):
    from flows.deploy import deploy

    state = deploy(version="v2", environment="staging", return_state=True)

    assert state.is_failed()
    assert "choose a saved ServiceSpec block, or give spec_path" in (state.message or "")


def test_a_run_without_an_environment_is_refused_naming_it(prefect_server, tmp_path):
    from deployflow.spec import load_spec
    from flows.deploy import deploy

    spec_file = tmp_path / "shop.yaml"
    spec_file.write_text(
        f"""
service: shop
target: {{kind: local-process, command: [app], state_dir: {tmp_path}}}
router: {{kind: haproxy, admin_socket: {tmp_path}/sock, frontend_url: "http://frontend.test"}}
metrics:
  kind: prometheus
  url: http://prometheus.test
  queries: {{error_rate: "{{version}}", p95_latency: "{{version}}", request_count: "{{version}}"}}
"""
    )
    load_spec(spec_file)  # a valid spec: only the environment is missing

    state = deploy(version="v2", spec_path=str(spec_file), return_state=True)

    assert state.is_failed()
    assert "refused, nothing was started" in (state.message or "")
    assert "environment: name the environment this deploy goes to" in (state.message or "")
