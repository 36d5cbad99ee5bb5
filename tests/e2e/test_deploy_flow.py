"""Whole deploys through the Prefect flow on the sandbox: a promotion, then a rollback.

The tests run in order on one sandbox: v2 is promoted over v1, then v3 (20% errors) is rolled back
to v2, then the CLI is checked for its exit codes and JSON on the same setup.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from deployflow.tracking import db, repository
from deployflow.tracking.lease import lease_alive
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC
from tests.e2e.helpers import (
    artifact_markdown,
    deploy_in_its_own_process,
    rolled_back_for_its_errors,
)

pytestmark = pytest.mark.e2e


def run(version: str) -> dict:
    state = deploy(
        environment="sandbox", spec_path=str(EXAMPLE_SPEC), version=version, return_state=True
    )
    data = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(data, dict), f"the flow crashed: {data!r}"
    return data


@contextlib.contextmanager
def spec_variant(name: str, old: str, new: str) -> Iterator[Path]:
    """The example spec with one piece replaced, beside it so its relative paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    assert old in text
    path = EXAMPLE_SPEC.parent / f".test-{name}.yaml"
    path.write_text(text.replace(old, new))
    try:
        yield path
    finally:
        path.unlink()


SLACK_AT = "notifications:\n"


def slack_section(base_url: str) -> str:
    return (
        "notifications:\n  notifiers:\n    - kind: slack\n"
        f'      channel: "#deploys"\n      base_url: {base_url}\n'
    )


def tracked(deployment_id: int) -> dict:
    engine = db.make_engine(db.database_url())
    try:
        with db.session_factory(engine)() as s:
            return repository.deployment_to_dict(repository.get_deployment(s, deployment_id))
    finally:
        engine.dispose()


def test_healthy_version_is_promoted_through_every_stage(sandbox: Sandbox) -> None:
    result = run("v2")

    assert result["status"] == "succeeded", result["message"]
    assert result["strategy"] == "canary"
    assert [s["weight"] for s in result["stages"]] == [5, 25, 50, 100]
    assert all(s["verdict"] == "promote" for s in result["stages"])
    assert result["rollback"] is None
    assert result["baseline_p95_seconds"] > 0
    # The real router now sends everything to v2, and v1 was stopped after verification.
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    assert set(versions) == {"v2"}
    state = build_router(spec).state()
    assert state.stable == versions["v2"].address
    assert state.canary_weight == 0
    served = {httpx.get(sandbox.frontend_url + "/api/items").json()["version"] for _ in range(10)}
    assert served == {"v2"}
    row = tracked(result["deployment_id"])
    assert row["status"] == "succeeded"
    assert row["previous_version"] == "v1"
    assert [s["weight"] for s in row["stages"]] == [5, 25, 50, 100]
    assert row["flow_run_id"] == result["flow_run_id"]
    checks = {(c["step"], c["name"]): c for c in row["checks"]}
    assert checks[("pre_checks", "build")]["status"] == "passed"
    assert checks[("pre_checks", "lint")]["status"] == "passed"
    skipped = checks[("pre_checks", "review")]
    assert skipped["status"] == "skipped"
    assert skipped["reason"], "a skip is never silent"
    assert checks[("migrations", "migrations")]["status"] == "skipped"


def test_bad_version_rolls_back_at_the_first_stage(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slack is configured but unreachable: the rollback must go on regardless.
    monkeypatch.setenv("DEPLOYFLOW_SLACK_TOKEN", "xoxb-unreachable")
    closed = f"http://127.0.0.1:{free_port()}/api/"
    live = live_version()
    with spec_variant("slack-down", SLACK_AT, slack_section(closed)) as spec_file:
        state = deploy(
            environment="sandbox", spec_path=str(spec_file), version="v3", return_state=True
        )
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result

    assert result["status"] == "rolled_back", result["message"]
    assert (state.type.value, state.name) == ("FAILED", "Failed")
    assert f"v3 rolled_back: rolled back to {live}" in (state.message or "")
    # The UI's Task Runs tab reads every task input; it cannot read one of type flow_run.
    assert task_input_types(result["flow_run_id"]) <= {"task_run", "parameter", "constant"}
    rollback = result["rollback"]
    assert rollback["stage"] == 0
    seen = result["stages"][0]["values"]["error_rate"]
    rolled_back_for_its_errors(
        rollback["metric"], rollback["value"], rollback["threshold"], rollback["reason"], seen
    )
    assert rollback["verified"] is True
    assert [s["verdict"] for s in result["stages"]] == ["rollback"]
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    assert set(versions) == {live}, "the canary must be stopped and stable kept"
    state = build_router(spec).state()
    assert state.stable == versions[live].address
    assert state.canary is None
    row = tracked(result["deployment_id"])
    assert row["status"] == "rolled_back"
    (incident,) = row["incidents"]
    assert (incident["stage"], incident["metric"]) == (0, rollback["metric"])
    rolled_back_for_its_errors(
        incident["metric"], incident["value"], incident["threshold"], incident["reason"], seen
    )


def live_version() -> str:
    """The version the sandbox's router sends stable traffic to (earlier tests of the module
    may have released one)."""
    spec = load_spec(EXAMPLE_SPEC)
    stable = build_router(spec).state().stable
    return next(i.version for i in build_target(spec).instances() if i.address == stable)


def task_input_types(flow_run_id: str) -> set[str]:
    """The input types of every task input of the run's own task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
        )
    return {i.input_type for t in task_runs for inputs in t.task_inputs.values() for i in inputs}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        cwd=Path(__file__).parents[2],
    )


def test_cli_exit_codes_and_json(sandbox: Sandbox, prefect_server: str, tmp_path: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    router_before = build_router(load_spec(EXAMPLE_SPEC)).state()
    live = live_version()

    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_SPEC.read_text().replace("steps: [5, 25, 50, 100]", "steps: [50, 5]"))
    proc = cli("deploy", str(bad), "--version", "v4", "--json", env=env)
    assert proc.returncode == 2
    assert "strategy.canary.steps" in proc.stderr
    proc = cli("deploy", str(EXAMPLE_SPEC), "--version", "v4;rm -rf /", env=env)
    assert proc.returncode == 2
    assert "--version" in proc.stderr
    assert build_router(load_spec(EXAMPLE_SPEC)).state() == router_before, (
        "bad input touched traffic"
    )
    assert "v4" not in {i.version for i in build_target(load_spec(EXAMPLE_SPEC)).instances()}

    with (
        FakeSlackAPI(token="xoxb-e2e") as slack,
        spec_variant("slack", SLACK_AT, slack_section(slack.base_url)) as spec_file,
    ):
        env["DEPLOYFLOW_SLACK_TOKEN"] = "xoxb-e2e"
        proc = cli("deploy", str(spec_file), "--version", "v3", "--json", env=env)
        texts = [m.text or "" for m in slack.messages]
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert any("Deploying *demo* `v3`" in t for t in texts), texts
    assert any(f"rolled back to {live}" in t for t in texts), texts
    assert "xoxb-e2e" not in proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "rolled_back"
    assert out["strategy"] == "canary"
    assert {"weight", "verdict", "values"} <= set(out["stages"][0])
    assert {"stage", "metric", "value", "threshold", "reason"} <= set(out["rollback"])
    assert out["flow_run_id"]


def test_interrupted_deploy_is_reconciled_by_the_next_run(sandbox: Sandbox) -> None:
    """A deploy that died at 25% leaves a canary with traffic; the next run restores stable."""
    spec = load_spec(EXAMPLE_SPEC)
    target, router = build_target(spec), build_router(spec)
    stable = next(i for i in target.instances() if i.address == router.state().stable)
    orphan = target.start("v4")
    router.set_split(stable, orphan, 25)
    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    try:
        with db.session_factory(engine)() as s, s.begin():
            row = repository.create_deployment(
                s,
                service=spec.service,
                environment="sandbox",
                version="v4",
                strategy="canary",
                status="running",
                flow_run_id=str(uuid.uuid4()),  # a run no Prefect server knows: nobody drives it
            )
            dead_id = row.id
    finally:
        engine.dispose()

    state = deploy(
        environment="sandbox",
        spec_path=str(EXAMPLE_SPEC),
        version="v5",
        dry_run=True,
        return_state=True,
    )
    result = outcome_of(state.result(raise_on_failure=False))

    assert isinstance(result, dict), result
    assert result["status"] == "succeeded"
    assert (state.type.value, state.name) == ("COMPLETED", "Completed")
    assert router.state().canary is None
    assert router.state().stable == stable.address
    assert "v4" not in {i.version for i in target.instances()}
    dead = tracked(dead_id)
    assert dead["status"] == "failed"
    assert "interrupted" in dead["summary"]


FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.mark.parametrize(
    ("section", "artifact", "evidence"),
    [
        (
            "pre_checks:\n  checkout: ..\n  build:\n"
            '    command: [".venv/bin/python", "-c", "raise SystemExit(\'build broke\')"]\n',
            "pre-checks-demo",
            "build broke",
        ),
        (
            f"migrations:\n  path: {FIXTURES / 'migrations' / 'projects' / 'multiple_heads'}\n",
            "migrations-demo",
            "head",
        ),
    ],
    ids=["failing-pre-check", "unsafe-migrations"],
)
def test_failing_gate_stops_the_deploy_before_traffic_with_evidence(
    sandbox: Sandbox, tmp_path: Path, section: str, artifact: str, evidence: str
) -> None:
    text = EXAMPLE_SPEC.read_text()
    start = text.index("pre_checks:")
    end = text.index("smoke:")
    spec_file = EXAMPLE_SPEC.parent / f".test-{tmp_path.name}.yaml"  # relative paths as the example
    spec_file.write_text(text[:start] + section + text[end:])
    try:
        spec = load_spec(spec_file)
        before = build_router(spec).state()
        state = deploy(
            environment="sandbox", spec_path=str(spec_file), version="v6", return_state=True
        )
        result = outcome_of(state.result(raise_on_failure=False))
    finally:
        spec_file.unlink()

    assert isinstance(result, dict), result
    assert result["status"] == "aborted"
    assert "before any traffic moved" in result["message"]
    assert result["stages"] == []
    assert build_router(spec).state() == before
    assert "v6" not in {i.version for i in build_target(spec).instances()}
    assert evidence in artifact_markdown(result["flow_run_id"], artifact)


def test_redeploying_the_live_version_is_a_no_op(sandbox: Sandbox) -> None:
    spec = load_spec(EXAMPLE_SPEC)
    live = next(
        i.version
        for i in build_target(spec).instances()
        if i.address == build_router(spec).state().stable
    )
    before = build_router(spec).state()
    result = run(live)
    assert result["status"] == "succeeded"
    assert "nothing to deploy" in result["message"]
    assert result["stages"] == []
    assert build_router(spec).state() == before


def test_a_dry_run_with_a_misspelt_metric_fails_naming_each_query(sandbox: Sandbox) -> None:
    """The live checks of a dry run try every query on the live version (issue 22: a misspelt
    metric name passed validate and the dry run while v1 was live and scraped)."""
    with spec_variant("misspelt", "deployflow_demo_http_", "deployflow_demo_htp_") as spec_file:
        spec = load_spec(spec_file)
        before = build_router(spec).state()
        state = deploy(
            environment="sandbox",
            spec_path=str(spec_file),
            version="v9",
            dry_run=True,
            return_state=True,
        )
    result = outcome_of(state.result(raise_on_failure=False))

    assert isinstance(result, dict), result
    assert result["status"] == "aborted"
    assert result["message"].startswith("dry run: 5 live check(s) failed: ")
    for query in ("error_rate", "p95_latency", "request_count", "latency_buckets"):
        assert f"metrics.queries.{query}: no data for v" in result["message"]
    assert "did you mean deployflow_demo_http_requests_total?" in result["message"]
    assert build_router(spec).state() == before


def test_metrics_backend_down_never_promotes(sandbox: Sandbox) -> None:
    """Without a baseline the canary cannot be judged: the deploy stops before any traffic."""
    closed = f"http://127.0.0.1:{free_port()}"
    with spec_variant(
        "prometheus-down", "  url: ${DEPLOYFLOW_SANDBOX_PROMETHEUS_URL}\n", f"  url: {closed}\n"
    ) as spec_file:
        spec = load_spec(spec_file)
        before = build_router(spec).state()
        state = deploy(
            environment="sandbox", spec_path=str(spec_file), version="v7", return_state=True
        )
    result = outcome_of(state.result(raise_on_failure=False))

    assert isinstance(result, dict), result
    assert result["status"] == "aborted"
    assert (state.type.value, state.name) == ("FAILED", "Failed")
    assert "cannot measure the P95 baseline" in result["message"]
    assert build_router(spec).state() == before
    assert "v7" not in {i.version for i in build_target(spec).instances()}


def test_slow_version_rolls_back_on_p95_against_the_stable_in_the_same_window(
    sandbox: Sandbox,
) -> None:
    result = run("v8")  # 120 ms added to every request; the stable P95 is about 20 ms

    assert result["status"] == "rolled_back", result["message"]
    rollback = result["rollback"]
    assert rollback["metric"] == "p95_latency"
    assert rollback["stage"] == 0
    # The limit is 2x the stable's P95 measured alongside the canary, not the pre-deploy one.
    assert "against stable's" in rollback["reason"]
    assert "in the same window" in rollback["reason"]
    assert rollback["value"] > rollback["threshold"]


# The killed deploy's own environment: its Prefect concurrency slot stays held until the slot's
# lease lapses (60 s, Prefect's shortest), which would make the next release of demo to sandbox
# wait that long; the reconciliation under test is per service and environment alike.
KILLED_ENVIRONMENT = "kill-test"


def killed_row() -> dict:
    engine = db.make_engine(db.database_url())
    try:
        with db.session_factory(engine)() as s:
            unfinished = repository.unfinished(s, "demo", KILLED_ENVIRONMENT)
            [row] = [r for r in unfinished if r.version == "v10"]
            return {"id": row.id, "heartbeat_at": row.heartbeat_at, "flow_run_id": row.flow_run_id}
    finally:
        engine.dispose()


def deploy_with_canary_traffic(
    version: str, prefect_server: str, log: Path, environment: str = "sandbox"
) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """`deployflow deploy VERSION` of the example spec in its own process, once its canary takes
    traffic (with a long observe window, so it stays there); killed with its group afterwards."""
    return deploy_in_its_own_process(
        EXAMPLE_SPEC, version, prefect_server, log, args=("--environment", environment)
    )


def test_a_deploy_killed_mid_canary_is_reconciled_once_its_lease_lapses(
    sandbox: Sandbox, prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of `deployflow deploy` with a canary taking traffic: nothing of the dead run can
    clean up, Prefect still shows it Running, and its lease alone tells the next run it is dead."""
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "4")
    spec = load_spec(EXAMPLE_SPEC)
    target, router = build_target(spec), build_router(spec)
    stable_before = router.state().stable
    with deploy_with_canary_traffic(
        "v10", prefect_server, tmp_path / "killed.log", KILLED_ENVIRONMENT
    ) as killed:
        os.killpg(killed.pid, signal.SIGKILL)
    assert router.state().canary_weight > 0  # the kill left traffic on the canary
    assert "v10" in {i.version for i in target.instances()}
    wait_for(
        lambda: not lease_alive(killed_row()["heartbeat_at"], datetime.now(UTC), 4.0) or None,
        timeout=30,
        interval=0.5,
        what="the killed deploy's lease to lapse",
    )
    killed_run = killed_row()["flow_run_id"]

    result = deploy(
        spec_path=str(EXAMPLE_SPEC),
        version="v11",
        environment=KILLED_ENVIRONMENT,
        dry_run=True,
        return_state=True,
    ).result(raise_on_failure=False)
    result = outcome_of(result)

    assert isinstance(result, dict), result
    assert result["status"] == "succeeded", result["message"]
    assert any("interrupted deploy of v10 reconciled" in n for n in result["reconciled"])
    # Not left Running in Prefect forever: the reconciling deploy marked the dead run Crashed.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(uuid.UUID(killed_run)).state
    assert state is not None
    assert state.type.value == "CRASHED", state
    assert "interrupted deploy of v10 reconciled" in (state.message or "")
    assert router.state().stable == stable_before
    assert router.state().canary is None
    assert "v10" not in {i.version for i in target.instances()}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_a_deploy_stopped_by_a_signal_puts_traffic_back_and_says_so_in_its_json(
    sandbox: Sandbox, prefect_server: str, tmp_path: Path, stop: signal.Signals
) -> None:
    """SIGTERM (what a process worker sends on cancellation, and `kill`) or Ctrl-C (SIGINT) with
    the canary taking traffic: the flow puts traffic back, and `deploy --json` ends with one JSON
    object on stdout saying so (traffic restored, the version serving, the tracking id) and the
    exit code it uses, 128 + the signal's number."""
    spec = load_spec(EXAMPLE_SPEC)
    target, router = build_target(spec), build_router(spec)
    stable_before = router.state().stable
    stable_version = next(i.version for i in target.instances() if i.address == stable_before)
    log, out = tmp_path / "stopped.log", tmp_path / "stdout.json"
    with deploy_in_its_own_process(
        EXAMPLE_SPEC, "v12", prefect_server, log, args=("--json",), stdout=out
    ) as stopped:
        stopped.send_signal(stop)
        returncode = stopped.wait(timeout=60)
    assert returncode == 128 + stop, log.read_text()
    assert router.state().stable == stable_before
    assert router.state().canary is None
    assert "v12" not in {i.version for i in target.instances()}
    [line] = [line for line in out.read_text().splitlines() if line.strip()]
    ending = json.loads(line)
    assert ending["status"] == "interrupted", ending
    assert ending["exit_code"] == returncode
    assert ending["signal"] == stop.name
    assert ending["traffic_restored"] is True
    assert ending["serving"] == stable_version
    assert isinstance(ending["deployment_id"], int)
    assert ending["interruption"]["signal"] == stop.name
    assert f"all traffic back on {stable_version}" in ending["message"]


def _everything_prefect_stored(client) -> str:
    """Every flow run, task run, log line and artifact on the session's Prefect server."""
    parts: list[str] = []
    readers = (client.read_flow_runs, client.read_task_runs, client.read_logs)
    for read in readers:
        offset = 0
        while page := read(limit=200, offset=offset):
            parts += [item.model_dump_json() for item in page]
            offset += len(page)
    parts += [a.model_dump_json() for a in client.read_artifacts(limit=200)]
    return "\n".join(parts)


def test_secrets_reach_no_log_run_artifact_or_record(
    sandbox: Sandbox, prefect_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service secret given through target.env and a Slack token, through a rolled-back
    deploy: neither appears in what Prefect stores (runs with their parameters, task runs, logs,
    artifacts), in the tracking database or in any file deployflow or the sandbox wrote; the
    canary's own environment holds the service secret it was given and not the Slack token."""
    from prefect.client.orchestration import get_client

    service_secret, slack_token = "s3cr3t-service-value-4711", "xoxb-s3cr3t-token-4712"
    monkeypatch.setenv("SERVICE_DB_PASSWORD", service_secret)
    monkeypatch.setenv("DEPLOYFLOW_SLACK_TOKEN", slack_token)
    text = EXAMPLE_SPEC.read_text()
    env_line = "    DEPLOYFLOW_DEMO_FAULTS: ${DEPLOYFLOW_DEMO_FAULTS:-}\n"
    with FakeSlackAPI(token=slack_token) as slack:
        variant = EXAMPLE_SPEC.parent / ".test-secrets.yaml"
        variant.write_text(
            text.replace(
                env_line, env_line + "    SERVICE_DB_PASSWORD: ${SERVICE_DB_PASSWORD}\n"
            ).replace(SLACK_AT, slack_section(slack.base_url))
        )
        canary_environ: dict[bytes, bytes] = {}
        watcher = threading.Thread(
            target=_read_environ_of, args=(variant, "v3", canary_environ), daemon=True
        )
        watcher.start()
        try:
            state = deploy(
                environment="sandbox", spec_path=str(variant), version="v3", return_state=True
            )
        finally:
            variant.unlink()
            watcher.join(timeout=30)
        assert slack.messages, "the Slack token was used"
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "rolled_back", result["message"]

    with get_client(sync_client=True) as client:
        stored = _everything_prefect_stored(client)
    assert str(result["flow_run_id"]) in stored  # the haystack holds this deploy
    tracking = Path(db.database_url().removeprefix("sqlite:///")).read_bytes()
    written = {
        path: path.read_bytes()
        for root in (sandbox.state_dir, Path(os.environ["DEPLOYFLOW_DATA_DIR"]))
        for path in Path(root).rglob("*")
        if path.is_file()
    }
    assert written, "the sandbox and deployflow wrote files"
    for secret in (service_secret, slack_token):
        assert secret not in stored
        assert secret.encode() not in tracking
        assert not [p for p, data in written.items() if secret.encode() in data]
    # What the service was given reaches it; what the orchestrator holds does not.
    assert canary_environ.get(b"SERVICE_DB_PASSWORD") == service_secret.encode()
    assert slack_token.encode() not in b"".join(canary_environ.values())
    assert not {b"DEPLOYFLOW_SLACK_TOKEN", b"PREFECT_API_URL"} & set(canary_environ)


def _read_environ_of(spec_file: Path, version: str, into: dict[bytes, bytes]) -> None:
    """Wait (up to 60 s) for ``version`` to run, then copy its /proc environment into ``into``."""

    def running_pid() -> int | None:
        try:
            target = build_target(load_spec(spec_file))
        except OSError:  # the spec file is gone: the deploy ended
            return -1
        return next((i.pid for i in target.instances() if i.version == version), None)

    pid = wait_for(running_pid, timeout=60, interval=0.2, what=f"{version} to start")
    if pid > 0:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            pairs = (item.partition(b"=") for item in handle.read().split(b"\0") if item)
            into.update({key: value for key, _, value in pairs})
