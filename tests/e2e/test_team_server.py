"""The team-server path for real: Prefect server on PostgreSQL, two process workers, PG tracking.

Nothing runs a flow in the test process. A ``prefect server start`` subprocess stores its state in a
PostgreSQL database; the pool and the deployment are created with the Prefect CLI from the
repository root (``prefect.yaml``); two ``prefect worker start`` processes pick the runs up, and
the flow runs they start write deployflow's tracking rows to another database on the same
PostgreSQL server. The tests run in order on one sandbox: the registered deployment is checked
against prefect.yaml, v2 is promoted while a dry run for another environment runs beside it (and a
deploy through a second Prefect server is refused), then v3 (20% errors) is rolled back while a run
whose spec the worker cannot read fails naming it.

The fixtures are split into "starting" and "ready" halves so that slow start-ups overlap on this
2-core machine: the sandbox starts while the server migrates its database, and the workers boot
and the sandbox gathers its baseline while ``prefect deploy`` imports the flow.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse

from deployflow.polling import wait_for
from deployflow.sandbox.postgres import LocalPostgres
from deployflow.sandbox.supervisor import SANDBOX_RPS, Sandbox
from deployflow.spec import ServiceSpec, load_spec
from tests.backends import build_metrics, build_router, build_target
from tests.e2e.conftest import FAST_EVIDENCE
from tests.e2e.helpers import rolled_back_for_its_errors
from tests.e2e.team_conftest_helpers import (
    POOL,
    PrefectServer,
    Workers,
    api_client,
    clean_environ,
    executing_workers,
    final_states,
    flow_run_ids_in_database,
    prefect_cli,
    prefect_server_on_postgres,
    process_workers,
    public_tables,
    run_logs_once_finished,
    state_types,
    tracked_by_flow_run,
    tracked_rows,
    wait_healthy,
)
from tests.integration.prefect.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

EXAMPLE_SPEC = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
# What a person picks in the form: the deployment chooses no service and no environment.
SANDBOX = {"spec_path": "examples/sandbox.yaml", "environment": "sandbox"}
FAULTS = json.dumps({"v3": {"error_rate": 0.2}})
WORKER_NAMES = ("team-worker-1", "team-worker-2")
# A flow run process spends ~10 s importing before the flow starts, then a canary takes about
# 4 stages x 4 s; the deadline leaves room for a loaded machine without hiding a hang.
RUN_TIMEOUT = 100


@dataclass
class Team:
    """Everything a test needs: the server, the deployment, running workers, sandbox, tracking."""

    server: PrefectServer
    deployment: DeploymentResponse
    workers: Workers
    sandbox: Sandbox
    tracking_url: str

    def spec(self) -> ServiceSpec:
        """The sandbox spec as the flow runs see it (interpolated from the sandbox's variables)."""
        return load_spec(EXAMPLE_SPEC, env={**clean_environ(), **self.sandbox.env_vars()})

    def run_to_the_end(self, parameters: list[dict[str, object]]) -> dict[UUID, FlowRun]:
        """Create one run per parameter set at once; return them (same order) once all are final."""
        return self.wait_for_the_end(self.start(parameters))

    def start(self, parameters: list[dict[str, object]]) -> list[UUID]:
        """Create one run per parameter set at once; return their ids."""
        with api_client(self.server.api_url) as client:
            return [
                client.create_flow_run_from_deployment(self.deployment.id, parameters=p).id
                for p in parameters
            ]

    def wait_for_the_end(self, ids: list[UUID]) -> dict[UUID, FlowRun]:
        """The runs (same order) once all are final."""
        with api_client(self.server.api_url) as client:
            try:
                return wait_for(
                    lambda: final_states(client, ids, self.workers),
                    timeout=RUN_TIMEOUT,
                    interval=1,
                    what=f"{len(ids)} flow run(s) to finish",
                )
            except Exception as exc:
                raise AssertionError(f"runs did not finish\n{self.workers.log_text()}") from exc


@pytest.fixture(scope="module")
def team_server_starting(
    postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectServer]:
    """The Prefect server process, started but maybe not healthy yet (see ``team_server``)."""
    home = tmp_path_factory.mktemp("team-prefect-home")
    with prefect_server_on_postgres(
        postgres, "team_prefect", home, home.parent / "team-prefect-server.log"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def team_sandbox_starting(
    team_server_starting: PrefectServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sandbox]:
    """A sandbox of its own with v1 live and traffic flowing; no baseline yet (see ``team``)."""
    state = tmp_path_factory.mktemp("team-sandbox")
    with Sandbox(state, env={"DEPLOYFLOW_DEMO_FAULTS": FAULTS}, rps=SANDBOX_RPS) as sb:
        yield sb


@pytest.fixture(scope="module")
def team_server(
    team_server_starting: PrefectServer, team_sandbox_starting: Sandbox
) -> PrefectServer:
    """The Prefect server once ``/api/health`` answers."""
    wait_healthy(team_server_starting)
    return team_server_starting


@pytest.fixture(scope="module")
def tracking_url(postgres: LocalPostgres) -> str:
    """deployflow's tracking database on the same PostgreSQL server (psycopg URL)."""
    return postgres.create_database("team_tracking")


@pytest.fixture(scope="module")
def team_env(
    team_server: PrefectServer,
    team_sandbox_starting: Sandbox,
    tracking_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """What a worker host on the team server has: the API, the sandbox, the tracking database."""
    return {
        **clean_environ(),
        **team_sandbox_starting.env_vars(),
        "PREFECT_API_URL": team_server.api_url,
        # Worker hosts have their own Prefect home, not the server's.
        "PREFECT_HOME": str(tmp_path_factory.mktemp("team-worker-home")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Workers poll every 10 s by default; 1 s keeps the test short and costs one small query.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "DEPLOYFLOW_DEMO_FAULTS": FAULTS,
        "DEPLOYFLOW_DATABASE_URL": tracking_url,
        "DEPLOYFLOW_OBSERVE": "4s",
        **FAST_EVIDENCE,
        # Nothing should land here with a database URL set; it keeps stray files off ~/.deployflow.
        "DEPLOYFLOW_DATA_DIR": str(tmp_path_factory.mktemp("team-data")),
    }


@pytest.fixture(scope="module")
def team_pool(team_env: dict[str, str]) -> str:
    """The process work pool, created with the Prefect CLI as the README tells a team to."""
    prefect_cli(team_env, "work-pool", "create", POOL, "--type", "process")
    return POOL


@pytest.fixture(scope="module")
def workers_starting(
    team_pool: str, team_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    """Two ``prefect worker start`` processes, maybe still booting (see ``team``)."""
    logs = tmp_path_factory.mktemp("team-workers")
    with process_workers(WORKER_NAMES, team_env, logs) as started:
        yield started


@pytest.fixture(scope="module")
def team_deployment(
    team_server: PrefectServer, team_env: dict[str, str], workers_starting: Workers
) -> DeploymentResponse:
    """``deploy/deploy`` registered by ``prefect deploy --all`` from the repository root.

    Requested after ``workers_starting`` only for time: the workers boot (a few seconds of
    imports each) while this CLI imports the flow to build its parameter schema.
    """
    prefect_cli(team_env, "--no-prompt", "deploy", "--all")
    with api_client(team_server.api_url) as client:
        return client.read_deployment_by_name("deploy/deploy")


@pytest.fixture(scope="module")
def team(
    team_server: PrefectServer,
    team_deployment: DeploymentResponse,
    workers_starting: Workers,
    team_sandbox_starting: Sandbox,
    tracking_url: str,
) -> Team:
    """Both workers registered with the pool and a P95 baseline for v1: ready for deploys."""
    with api_client(team_server.api_url) as client:
        try:
            wait_for(
                lambda: (
                    set(WORKER_NAMES) <= {w.name for w in client.read_workers_for_work_pool(POOL)}
                ),
                timeout=60,
                interval=0.5,
                what="both workers to register with the pool",
            )
        except Exception as exc:
            raise AssertionError(
                f"workers did not register\n{workers_starting.log_text()}"
            ) from exc
    ready = Team(
        team_server, team_deployment, workers_starting, team_sandbox_starting, tracking_url
    )
    spec = ready.spec()
    ready.sandbox.wait_for_metrics("v1", timeout=60)
    metrics = build_metrics(spec)
    # Without a baseline the first deploy is blocked before any traffic moves.
    wait_for(
        lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
        timeout=60,
        interval=0.5,
        what="a P95 baseline for v1",
    )
    return ready


def test_deployment_matches_prefect_yaml(
    team_server: PrefectServer, team_deployment: DeploymentResponse
) -> None:
    assert team_deployment.entrypoint == "flows/deploy.py:deploy"
    assert team_deployment.work_pool_name == POOL
    # No service, spec path or environment is chosen for the sender of the form (issue 22).
    assert team_deployment.parameters == {
        "strategy": "auto",
        "dry_run": False,
    }
    assert set(team_deployment.tags) == {"deployflow", "release"}
    assert "rollback" in (team_deployment.description or "")
    # The nightly dry run is registered with its own parameters, and switched off.
    [nightly] = team_deployment.schedules
    assert nightly.slug == "nightly-dry-run"
    assert nightly.active is False
    assert nightly.parameters == {"version": "nightly", "environment": "staging", "dry_run": True}
    # Runs start warm: the launcher of this checkout, with the interpreter that registered it.
    launcher = str(REPO_ROOT / "deployments" / "warm_start.py")
    # (through /bin/sh, which starts the run cold when either is missing on a worker's machine).
    assert shlex.split(team_deployment.job_variables["command"])[4:6] == [sys.executable, launcher]
    # The pull step was resolved at deploy time to this checkout (see prefect.yaml).
    assert team_deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT.resolve())}}
    ]
    # For remote workers: a clone of the repository and branch recorded at deploy time.
    with api_client(team_server.api_url) as client:
        from_git = client.read_deployment_by_name("deploy/deploy-from-git")
    [clone, chdir] = from_git.pull_steps or []
    source = clone["prefect.deployments.steps.git_clone"]
    assert source["repository"]
    assert source["branch"]
    assert "{{" not in source["repository"] + source["branch"]
    assert chdir == {
        "prefect.deployments.steps.set_working_directory": {"directory": "{{ clone.directory }}"}
    }
    assert from_git.job_variables == {
        "env": {"DEPLOYFLOW_LEASE_SECONDS": "30", "PYTHONUNBUFFERED": "1"}
    }


def test_parameter_form_is_described_typed_and_requires_version(
    team_deployment: DeploymentResponse,
) -> None:
    schema = team_deployment.parameter_openapi_schema
    properties = schema["properties"]

    assert {"spec_path", "service", "version", "environment", "strategy", "dry_run"} <= set(
        properties
    )
    # The form lists the saved ServiceSpec blocks for the service.
    assert schema["definitions"]["ServiceSpecBlock"]["block_type_slug"] == "servicespec"
    # Descriptions come from the Args section of the flow's Google-style docstring.
    for name, prop in properties.items():
        assert prop.get("description"), f"parameter {name} has no description"
    assert set(_enum_of(schema, "strategy")) == {"auto", "canary", "direct", "blue-green"}
    assert "version" in schema["required"]
    assert team_deployment.enforce_parameter_schema is True


def _enum_of(schema: dict, name: str) -> list[str]:
    prop = schema["properties"][name]
    if "enum" in prop:
        return list(prop["enum"])
    # pydantic may put a Literal alias in definitions and reference it.
    ref = (prop.get("allOf") or [prop])[0]["$ref"].rsplit("/", 1)[-1]
    return list(schema["definitions"][ref]["enum"])


def test_prefect_server_stores_its_state_in_postgresql(team_server: PrefectServer) -> None:
    tables = public_tables(team_server.database_url)

    assert {"flow_run", "deployment", "work_pool", "alembic_version"} <= tables


def test_two_workers_share_a_canary_release_and_a_dry_run(
    team: Team, team_env: dict[str, str], prefect_server: str
) -> None:
    ids = team.start(
        [
            {"version": "v2", **SANDBOX},
            {
                "version": "v9",
                "spec_path": SANDBOX["spec_path"],
                "environment": "team-b",
                "dry_run": True,
            },
        ]
    )
    # Meanwhile a deploy of the same service through *another* Prefect server (the session's
    # SQLite one), sharing only the tracking database, must see the release as alive (its lease)
    # and be refused, touching nothing: no Prefect server knows both runs.
    wait_for(
        lambda: tracked_rows(team.tracking_url, "demo", "sandbox"),
        timeout=RUN_TIMEOUT,
        interval=0.5,
        what="the release's tracking row",
    )
    elsewhere = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "deploy", str(EXAMPLE_SPEC), "--version", "v4"],
        capture_output=True,
        text=True,
        env={**team_env, "PREFECT_API_URL": prefect_server},
        timeout=120,
        cwd=REPO_ROOT,
    )
    runs = team.wait_for_the_end(ids)
    assert elsewhere.returncode == 1, elsewhere.stdout + elsewhere.stderr
    assert "v2 to sandbox is still running" in elsewhere.stdout, elsewhere.stdout
    assert [row["version"] for row in tracked_rows(team.tracking_url, "demo", "sandbox")] == ["v2"]
    release_id, dry_run_id = runs
    for run in runs.values():
        assert run.state is not None
        assert run.state.is_completed(), (
            f"{run.name}: {run.state.message}\n{team.workers.log_text()}"
        )
    with api_client(team.server.api_url) as client:
        for run_id in runs:
            assert "RUNNING" in state_types(client, run_id), run_id
        ran_on = wait_for(
            lambda: executing_workers(client, list(runs)),
            timeout=20,
            interval=0.5,
            what="the workers' executed-flow-run events",
        )

    # The runs the API handed out are rows of the server's PostgreSQL database.
    assert {str(release_id), str(dry_run_id)} <= flow_run_ids_in_database(team.server.database_url)
    # Each worker runs one deploy at a time (--limit 1), so two concurrent runs use both, and
    # the dry run ran while the release was under way. (Not the converse: a dry run takes a few
    # seconds, and on a loaded machine the release's process may start only after it ended.)
    assert set(ran_on.values()) == set(WORKER_NAMES), ran_on
    release, dry_run = runs[release_id], runs[dry_run_id]
    assert release.start_time is not None
    assert release.end_time is not None
    assert dry_run.start_time is not None
    assert dry_run.start_time < release.end_time
    # Both started warm (prefect.yaml's job command): forked by the workers' zygote.
    warm = next(iter(team.workers.logs.values())).parent / "warm"
    forked = sum(p.read_text().count("started a run's process") for p in warm.glob("*.log"))
    assert forked >= 2, [p.read_text() for p in warm.glob("*.log")]

    row = tracked_by_flow_run(team.tracking_url, release_id)
    assert row["status"] == "succeeded", row["summary"]
    assert row["environment"] == "sandbox"
    assert row["previous_version"] == "v1"
    assert [s["weight"] for s in row["stages"]] == [5, 25, 50, 100]
    assert all(s["verdict"] == "promote" for s in row["stages"])
    spec = team.spec()
    assert {i.version for i in build_target(spec).instances()} == {"v2"}
    assert build_router(spec).state().canary is None

    planned = tracked_by_flow_run(team.tracking_url, dry_run_id)
    assert planned["status"] == "succeeded", planned["summary"]
    assert planned["environment"] == "team-b"
    assert planned["version"] == "v9"
    assert planned["dry_run"] is True
    assert planned["stages"] == []


def test_bad_version_run_by_a_worker_fails_and_is_rolled_back(team: Team, tmp_path: Path) -> None:
    missing_spec = tmp_path / "no-such-spec.yaml"
    runs = team.run_to_the_end(
        [{"version": "v3", **SANDBOX}, {"spec_path": str(missing_spec), "version": "v1"}]
    )
    (bad_id, bad), (unread_id, unread) = runs.items()

    # A spec the worker cannot read fails the run after its load-spec task, naming the file.
    assert unread.state is not None
    assert unread.state.is_failed(), f"{unread.state.type}: {unread.state.message}"
    message = unread.state.message or ""
    assert str(missing_spec) in message
    assert "cannot read the spec" in message
    assert "outcome:aborted" in unread.tags
    with api_client(team.server.api_url) as client:
        [task_run] = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[unread_id]))
        )
    # Bad input is the task's answer, not its crash (no traceback in the run's log).
    assert task_run.name.startswith("load-spec")
    assert task_run.state is not None
    assert task_run.state.is_completed()

    with api_client(team.server.api_url) as client:
        ran_on = wait_for(
            lambda: executing_workers(client, [bad_id]),
            timeout=20,
            interval=0.5,
            what="the worker's executed-flow-run event",
        )

    assert bad.state is not None
    assert bad.state.is_failed(), f"{bad.state.type}: {bad.state.message}"
    assert bad.state.name == "Failed"
    assert "outcome:rolled-back" in bad.tags
    assert "rolled_back" in (bad.state.message or "")
    assert ran_on[bad_id] in WORKER_NAMES
    with api_client(team.server.api_url) as client:
        logs = wait_for(
            lambda: run_logs_once_finished(client, bad_id),
            timeout=30,
            interval=0.5,
            what="the run's logs up to its final state",
        )
    # A worker's rolled-back run ends with one ERROR line carrying its outcome; the exception
    # Prefect's engine raises from the Failed state is not logged again with its traceback.
    errors = [message for level, message in logs if level >= 40]
    assert errors[-1].startswith("deploy of "), errors
    assert " v3 to " in errors[-1], errors
    assert "rolled back: rolled back to v2" in errors[-1], errors
    assert not [m for m in errors if "Traceback" in m or "cannot be resolved" in m], errors
    row = tracked_by_flow_run(team.tracking_url, bad_id)
    assert row["status"] == "rolled_back", row["summary"]
    assert row["previous_version"] == "v2"
    (incident,) = row["incidents"]
    # 20% errors: rolled back for the harm it showed (its error rate's bound above 5%), or on
    # the sandbox's rule for a stage that ran out unproven with its estimate above the limit.
    (stage,) = [s for s in row["stages"] if s["index"] == incident["stage"]]
    seen = stage["measurements"][-1]["error_rate"] if stage["measurements"] else None
    rolled_back_for_its_errors(
        incident["metric"], incident["value"], incident["threshold"], incident["reason"], seen
    )
    assert {i.version for i in build_target(team.spec()).instances()} == {"v2"}

    # prefect.yaml's after-rollback automation reacted to the rollback's event, and a worker ran
    # the follow-up with the event's facts as its parameters.
    with api_client(team.server.api_url) as client:
        followup_id = client.read_deployment_by_name("after-rollback/after-rollback").id

        def followed_up() -> list[FlowRun] | None:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[followup_id]))
            )
            return [r for r in found if r.state is not None and r.state.is_final()] or None

        try:
            [followup] = wait_for(
                followed_up, timeout=RUN_TIMEOUT, interval=1, what="the after-rollback run"
            )
        except Exception as exc:
            raise AssertionError(f"no follow-up run\n{team.workers.log_text()}") from exc
    assert followup.state is not None
    assert followup.state.is_completed(), followup.state.message
    reason = followup.parameters.pop("reason")
    assert followup.parameters == {
        "deploy": f"deployflow.deployment.{row['id']}",
        "service": "demo",
        "version": "v3",
        "environment": "sandbox",
        "run": str(bad_id),
    }
    assert "rolled back to v2" in reason, reason
