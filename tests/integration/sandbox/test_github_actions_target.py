"""The github-actions target against a loopback server speaking the Actions REST API.

The fake workflows "deploy" into ``FakeDeployedService`` (its health endpoints and its
``/versions`` status list), so the target passes the shared contract tests end to end; every way
GitHub can refuse or a run can fail is an error that names what to fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from blocks.github import GitHubCredentialsBlock
from deployflow.fakes.github_actions_api import (
    FakeDeployedService,
    FakeGitHubActions,
    ScriptedRun,
)
from deployflow.fakes.github_api import FakeAnswer
from deployflow.providers.base import (
    BackendConfigError,
    BackendError,
    BuildContext,
    FinalBackendError,
)
from deployflow.providers.command import Hook
from deployflow.providers.github_actions import (
    GitHubActionsTarget,
    GitHubActionsTargetSpec,
    Workflow,
)
from tests.contracts import TargetContract

pytestmark = pytest.mark.integration

REPO = "acme/shop"
TOKEN = "ghp_fakeTokenNeverShown1234"
RUN_NAME = "Deploy ${{ inputs.version }} [${{ inputs.deploy_id }}]"


@pytest.fixture
def service() -> Iterator[FakeDeployedService]:
    with FakeDeployedService() as deployed:
        yield deployed


@pytest.fixture
def github(service: FakeDeployedService) -> Iterator[FakeGitHubActions]:
    with FakeGitHubActions(token=TOKEN, per_page_max=2) as fake:
        fake.add_workflow(
            REPO,
            "deploy.yml",
            inputs={"version": True, "environment": True, "deploy_id": False},
            run_name=RUN_NAME,
            on_success=service.deploy,
        )
        fake.add_workflow(
            REPO,
            "undeploy.yml",
            inputs={"version": True, "deploy_id": False},
            run_name=RUN_NAME,
            on_success=service.remove,
        )
        yield fake


def make_target(
    github: FakeGitHubActions, service: FakeDeployedService, **changes: Any
) -> GitHubActionsTarget:
    options: dict[str, Any] = {
        "repository": REPO,
        "token": SecretStr(TOKEN),
        "token_source": "GITHUB_TOKEN",
        "start": Workflow(
            "start", "deploy.yml", {"version": "{version}", "environment": "{environment}"}, 5.0
        ),
        "stop": Workflow("stop", "undeploy.yml", {"version": "{version}"}, 5.0),
        "status_url": f"{service.base_url}/versions",
        "instance_address": ("url", service.url_template),
        "base_url": changes.pop("base_url", None) or github.base_url,
        "correlation_input": "deploy_id",
        "error_patterns": [r"\bERROR\b", r"^Traceback"],
        "poll_interval": 0.02,
        "start_timeout": 2.0,
        "service": "shop",
        "environment": "staging",
    }
    options.update(changes)
    return GitHubActionsTarget(**options)


class TestGitHubActionsTarget(TargetContract):
    @pytest.fixture
    def target(
        self, github: FakeGitHubActions, service: FakeDeployedService
    ) -> Iterator[GitHubActionsTarget]:
        target = make_target(github, service)
        yield target
        target.close()


def test_start_dispatches_finds_its_run_among_later_ones_and_follows_it(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    # Three other dispatches right after ours push our run to the second page (2 per page).
    github.script(REPO, "deploy.yml", ScriptedRun(queued_polls=2, others_dispatched_after=3))
    target = make_target(github, service)
    instance = target.start("v2")
    assert instance.version == "v2"
    assert target.health_url(instance) == f"{service.base_url}/v/v2/healthz"
    assert service.deployed == {"v2"}
    ours = github.runs[0]
    assert ours.inputs["version"] == "v2"
    assert ours.inputs["environment"] == "staging"
    assert ours.inputs["deploy_id"].startswith("deployflow-")
    assert ours.data["conclusion"] == "success"
    assert any("page=2" in r and "event=workflow_dispatch" in r for r in github.requests)
    polls = [r for r in github.requests if r.endswith(f"/actions/runs/{ours.data['id']}")]
    assert len(polls) >= 4  # queued twice, in progress once, completed
    assert all(run.data["status"] != "completed" for run in github.runs[1:])


def test_without_a_correlation_input_the_new_run_is_the_one_that_was_not_there(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    github.script(REPO, "deploy.yml", ScriptedRun(never_completes=True))
    earlier = make_target(github, service, start=Workflow("start", "deploy.yml",
                          {"version": "{version}", "environment": "e"}, 0.2))  # fmt: skip
    with pytest.raises(BackendError):
        earlier.start("v1")  # leaves a run behind (cancelled)
    target = make_target(github, service, correlation_input=None)
    target.start("v2")
    assert [run.inputs["version"] for run in github.runs] == ["v1", "v2"]
    assert github.runs[1].data["conclusion"] == "success"
    assert service.deployed == {"v2"}


def test_a_workflow_whose_run_name_lacks_the_correlation_id_is_explained(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    github.add_workflow(REPO, "plain.yml", inputs={"version": True, "deploy_id": False})
    start = Workflow("start", "plain.yml", {"version": "{version}"}, 0.2)
    with pytest.raises(BackendError) as error:
        make_target(github, service, start=start).start("v2")
    assert "no run whose title contains 'deployflow-" in str(error.value)
    assert "put ${{ inputs.deploy_id }} in the workflow's run-name" in str(error.value)


def test_a_failed_run_names_the_run_the_job_the_step_and_the_matching_log_lines(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    log = "\n".join(
        [
            "Pulling shop:v3",
            "kubectl rollout status deployment/shop",
            "ERROR: image shop:v3 not found in registry",
            "Traceback (most recent call last):",
            "  noise that matches nothing",
            "Error: Process completed with exit code 1.",
        ]
    )
    github.script(
        REPO, "deploy.yml", ScriptedRun(conclusion="failure", failed_step="Roll out", log=log)
    )
    target = make_target(github, service)
    with pytest.raises(FinalBackendError) as error:  # final: the deploy does not retry it
        target.start("v3")
    message = str(error.value)
    run = github.runs[0].data
    assert f"run {run['html_url']} ended with conclusion failure" in message
    assert f"failing job 'deploy' (failure, step 'Roll out'): {run['html_url']}/job/" in message
    assert "ERROR: image shop:v3 not found in registry" in message
    assert "Traceback (most recent call last):" in message
    assert "noise" not in message
    assert "Pulling" not in message
    assert ".0000000Z" not in message  # GitHub's timestamps are stripped
    assert TOKEN not in message
    assert service.deployed == set()
    download = next(
        i for i, r in enumerate(github.requests) if r.startswith("GET /_downloads/job-logs/")
    )
    assert github.authorizations[download] is None  # the token stays with the API host


def test_without_a_matching_line_the_log_tail_is_shown(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    github.script(REPO, "deploy.yml", ScriptedRun(conclusion="cancelled", log="step one\nboom"))
    with pytest.raises(BackendError, match=r"(?s)conclusion cancelled.*log tail:\n\s+step one"):
        make_target(github, service).start("v3")


def test_an_expired_job_log_is_read_from_the_run_archive(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    log = 'migrating\nERROR: relation "orders" does not exist\nexit 1'
    github.script(REPO, "deploy.yml", ScriptedRun(conclusion="failure", log=log, job_log_gone=True))
    with pytest.raises(BackendError) as error:
        make_target(github, service).start("v3")
    message = str(error.value)
    assert 'matching log lines:\n    ERROR: relation "orders" does not exist' in message
    assert "migrating" not in message
    archive = next(
        i for i, r in enumerate(github.requests) if r.startswith("GET /_downloads/run-logs/")
    )
    assert github.authorizations[archive] is None


def test_a_run_past_its_timeout_is_cancelled_and_named(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    github.script(REPO, "deploy.yml", ScriptedRun(never_completes=True))
    start = Workflow("start", "deploy.yml", {"version": "{version}", "environment": "e"}, 0.3)
    with pytest.raises(FinalBackendError) as error:
        make_target(github, service, start=start).start("v4")
    run = github.runs[0].data
    assert f"run {run['html_url']} did not complete within 0.3s" in str(error.value)
    assert "it was cancelled" in str(error.value)
    assert run["conclusion"] == "cancelled"


def test_a_successful_run_that_logs_errors_fails_the_start_and_the_version_is_removed(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    log = "helm upgrade shop ./chart\nERROR: hook post-upgrade failed, continuing\nDone"
    github.script(REPO, "deploy.yml", ScriptedRun(conclusion="success", log=log, job="rollout"))
    target = make_target(github, service)
    with pytest.raises(FinalBackendError) as error:
        target.start("v5")
    message = str(error.value)
    run = github.runs[0].data
    assert f"run {run['html_url']} succeeded, but its log matches error_patterns:" in message
    assert f"job 'rollout': {run['html_url']}/job/" in message
    assert "matching log lines:\n    ERROR: hook post-upgrade failed, continuing" in message
    assert "helm upgrade" not in message
    assert "v5 was removed with the stop workflow" in message
    # The run deployed v5; the stop workflow took it away, so no retry takes it as started.
    assert [r.workflow.file for r in github.runs] == ["deploy.yml", "undeploy.yml"]
    assert service.deployed == set()
    assert target.instances() == []


def test_a_clean_successful_run_passes_the_error_patterns_and_a_stop_that_logs_errors_fails(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    target = make_target(github, service)
    assert target.start("v6").version == "v6"  # default log "Deploying / Done": nothing matches
    github.script(REPO, "undeploy.yml", ScriptedRun(log="Traceback (most recent call last):"))
    with pytest.raises(BackendError, match=r"stop of v6: .* succeeded, but its log matches"):
        target.stop("v6")


def test_a_rejected_token_names_where_it_came_from_never_the_token(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    target = make_target(
        github, service, token=SecretStr("ghp_wrongToken9876"), token_source="the GitHub block 'ci'"
    )
    with pytest.raises(BackendError) as error:
        target.start("v2")
    message = str(error.value)
    assert "GitHub rejected the token from the GitHub block 'ci' (401: Bad credentials)" in message
    assert "wrongToken" not in message
    assert TOKEN not in message
    assert github.runs == []


def test_inputs_the_workflow_does_not_declare_are_a_422_naming_them(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    start = Workflow("start", "deploy.yml", {"version": "{version}", "colour": "blue"}, 5.0)
    with pytest.raises(BackendError) as error:
        make_target(github, service, start=start).start("v2")
    message = str(error.value)
    assert "GitHub refused to dispatch workflow 'deploy.yml' of acme/shop on ref 'main'" in message
    assert 'Unexpected inputs provided: ["colour"]' in message
    assert "inputs sent: colour, deploy_id, version" in message
    assert github.runs == []


def test_an_unknown_workflow_is_a_404_naming_it(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    start = Workflow("start", "deplyo.yml", {"version": "{version}"}, 5.0)
    with pytest.raises(BackendError, match=r"workflow 'deplyo.yml' of acme/shop not found \(404\)"):
        make_target(github, service, start=start).start("v2")


def test_a_secondary_rate_limit_is_waited_out_within_the_deadline(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    waits: list[float] = []
    github.fail_next(FakeGitHubActions.secondary_rate_limit(retry_after=3))
    make_target(github, service, sleep=waits.append).start("v2")
    assert waits == [3.0]
    assert service.deployed == {"v2"}
    assert sum(r.startswith("POST ") and r.endswith("/dispatches") for r in github.requests) == 2

    github.fail_next(FakeGitHubActions.secondary_rate_limit(retry_after=60))
    with pytest.raises(BackendError, match=r"rate limited \(HTTP 403.*wait 60s, past the deadline"):
        make_target(github, service, sleep=waits.append).start("v3")
    assert waits == [3.0]


def test_a_server_error_is_retried_for_reads_but_not_for_the_dispatch(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    # Without a correlation input the first request lists the runs (a read).
    github.fail_next(FakeAnswer(502, {"message": "Server Error"}))
    make_target(github, service, correlation_input=None).start("v2")
    assert service.deployed == {"v2"}
    github.fail_next(FakeAnswer(502, {"message": "Server Error"}))
    with pytest.raises(
        BackendError,
        match=r"HTTP 502 for workflow 'deploy.yml' of acme/shop .*may still have started a run",
    ):
        make_target(github, service).start("v3")
    assert [run.inputs["version"] for run in github.runs] == ["v2"]


def test_a_version_that_never_gets_healthy_is_stopped_by_the_stop_workflow(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    service.healthy = False
    with pytest.raises(BackendError, match=r"succeeded but v5 healthy at .* not reached.*stopped"):
        make_target(github, service, start_timeout=0.2).start("v5")
    assert [run.workflow.file for run in github.runs] == ["deploy.yml", "undeploy.yml"]
    assert service.deployed == set()


def test_an_api_error_answer_other_than_the_known_ones_is_quoted(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    github.fail_next(FakeAnswer(403, {"message": "Resource not accessible by integration"}))
    with pytest.raises(BackendError, match=r"needs the 'actions: write' permission on acme/shop"):
        make_target(github, service).start("v2")


def test_built_from_the_spec_with_a_block_the_block_token_and_url_are_used(
    github: FakeGitHubActions, service: FakeDeployedService
) -> None:
    class Blocks:
        """What ``blocks.loader.PrefectBlocks`` returns, without a Prefect server."""

        def load(self, block_type: str, name: str) -> Any:
            assert (block_type, name) == ("github", "ci")
            return GitHubCredentialsBlock(token=SecretStr(TOKEN), base_url=github.base_url)

    spec = GitHubActionsTargetSpec.model_validate(
        {
            "kind": "github-actions",
            "repository": REPO,
            "block": "ci",
            "start": {"workflow": "deploy.yml", "timeout": "5s",
                      "inputs": {"version": "{version}", "environment": "{environment}"}},
            "stop": {"workflow": "undeploy.yml", "inputs": {"version": "{version}"}},
            "correlation_input": "deploy_id",
            "status_url": f"{service.base_url}/versions",
            "poll_interval": "20ms",
        }
    )  # fmt: skip
    ctx = BuildContext(env={}, blocks=Blocks(), service="shop", environment="prod")
    target = GitHubActionsTarget.from_spec(spec, ctx)
    assert TOKEN not in repr(target)
    assert TOKEN not in target.describe()
    # No instance address in the spec: the status source's entry for the version is used.
    instance = target.start("v6")
    assert target.health_url(instance) == f"{service.base_url}/v/v6/healthz"
    assert github.runs[0].inputs["environment"] == "prod"


def test_without_a_block_or_github_token_the_spec_cannot_be_built() -> None:
    spec = GitHubActionsTargetSpec.model_validate(
        {
            "kind": "github-actions",
            "repository": REPO,
            "start": {"workflow": "deploy.yml"},
            "stop": {"workflow": "undeploy.yml"},
            "status_url": "http://127.0.0.1:9/versions",
        }
    )
    with pytest.raises(BackendConfigError, match="set GITHUB_TOKEN"):
        GitHubActionsTarget.from_spec(spec, BuildContext(env={}))
    built = GitHubActionsTarget.from_spec(spec, BuildContext(env={"GITHUB_TOKEN": TOKEN}))
    assert built.base_url == "https://api.github.com"


def test_the_status_and_logs_can_come_from_commands(tmp_path: Path) -> None:
    state = tmp_path / "deployed.json"

    def deployed(inputs: dict[str, str]) -> None:
        state.write_text(json.dumps([{"version": inputs["version"], "host": "10.0.0.7",
                                      "port": 8080}]))  # fmt: skip

    with FakeGitHubActions(token=TOKEN) as github:
        github.add_workflow(REPO, "deploy.yml", inputs={"version": True}, on_success=deployed)
        target = GitHubActionsTarget(
            repository=REPO,
            token=SecretStr(TOKEN),
            token_source="GITHUB_TOKEN",
            start=Workflow("start", "deploy.yml", {"version": "{version}"}, 5.0),
            stop=Workflow("stop", "deploy.yml", {"version": "{version}"}, 5.0),
            status=Hook("status", ("sh", "-c", 'cat "$STATE" 2>/dev/null || echo "[]"'), 5.0),
            logs=Hook("logs", ("sh", "-c", 'echo "app log of $1"', "logs", "{version}"), 5.0),
            env={"STATE": str(state)},
            base_url=github.base_url,
            poll_interval=0.02,
        )
        assert target.instances() == []
        target.run_workflow(target.workflows["start"], "v8")
        (instance,) = target.instances()
        assert (instance.version, instance.address) == ("v8", "10.0.0.7:8080")
        assert target.health_url(instance) == "http://10.0.0.7:8080/healthz"
        assert target.logs("v8") == "app log of v8"


def test_an_enterprise_api_root_in_process_through_the_fakes_transport(
    service: FakeDeployedService,
) -> None:
    github = FakeGitHubActions(token=TOKEN, path_prefix="/api/v3")
    github.add_workflow(REPO, "deploy.yml", inputs={"version": True}, on_success=service.deploy)
    github.script(
        REPO, "deploy.yml", ScriptedRun(), ScriptedRun(conclusion="failure", log="ERROR x")
    )
    target = make_target(
        github,
        service,
        base_url="https://github.example.com/api/v3",
        transport=github.transport(),
        correlation_input=None,
        start=Workflow("start", "deploy.yml", {"version": "{version}"}, 5.0),
    )
    target.start("v2")
    assert service.deployed == {"v2"}
    with pytest.raises(BackendError, match=r"(?s)conclusion failure.*ERROR x"):
        target.start("v3")
    assert all(r.split(" ")[1].startswith(("/api/v3/", "/_downloads/")) for r in github.requests)
