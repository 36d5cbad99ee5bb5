"""``deployflow rollback``'s refusals, ``history``'s columns and filters, and ``status``, in-process
against a SQLite tracking database (no flow runs here: the flow tests and e2e run rollbacks)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployflow.tracking import db, repository
from deployments.cli import main

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'tracking.db'}"
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_STATE_DIR", "/nonexistent/state")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET", "/nonexistent/haproxy.sock")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_FRONTEND_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_PROMETHEUS_URL", "http://127.0.0.1:9")
    engine = db.make_engine(url)
    db.upgrade(engine)
    with db.session_factory(engine)() as s, s.begin():
        for i, (version, status, strategy, previous) in enumerate(
            [
                ("v1", "succeeded", "canary", None),
                ("v2", "succeeded", "canary", "v1"),
                ("v3", "rolled_back", "canary", "v2"),
            ]
        ):
            row = repository.create_deployment(
                s,
                service="demo",
                environment="sandbox",
                version=version,
                strategy=strategy,
                previous_version=previous,
                status=status,
                flow_run_id=f"0000000{i}-aaaa-bbbb-cccc-dddddddddddd",
                started_at=T0 + timedelta(hours=i),
            )
            row.finished_at = T0 + timedelta(hours=i, minutes=5)
            row.summary = f"{version} {status}: the reason of {version}"
    engine.dispose()
    return url


def rollback(*args: str) -> list[str]:
    return ["rollback", "demo", "--spec", str(EXAMPLE), "--environment", "sandbox", *args]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--to", "v2"], "v2 is the live version of demo in sandbox: nothing to roll back"),
        (["--to", "v3"], "v3 never completed a release of demo in sandbox"),
        (["--to", "v9"], "v9 never completed a release of demo in sandbox (the tracking database "
                         "knows: v1)"),
        (["--to", "../x"], "--to"),
        (["--environment", "prod; rm"], "--environment"),
    ],
)  # fmt: skip
def test_refusals_exit_2_before_any_flow(
    tracking: str, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(rollback(*args)) == 2
    assert says in capsys.readouterr().err


def test_a_spec_of_another_service_is_refused(
    tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["rollback", "shop", "--spec", str(EXAMPLE), "--environment", "sandbox"]
    assert main(argv) == 2
    assert "SERVICE: 'shop' is not the service of" in capsys.readouterr().err


def test_the_environment_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rollback", "demo"])
    assert exited.value.code == 2
    assert "--environment" in capsys.readouterr().err


def test_history_shows_ids_runs_and_reasons(
    tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "--service", "demo"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "ID", "STARTED", "(UTC)", "SERVICE", "VERSION", "ENVIRONMENT", "STRATEGY", "STATUS",
        "RUN", "REASON",
    ]  # fmt: skip
    assert out[1].split()[:9] == [
        "3", "2026-01-05", "11:00", "demo", "v3", "sandbox", "canary", "rolled_back", "00000002",
    ]  # fmt: skip
    assert out[1].endswith("v3 rolled_back: the reason of v3")
    assert "deployflow report ID" in out[-1]


def test_history_filters_by_status_and_limit(
    tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["history", "--status", "succeeded", "--json"]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == ["v2", "v1"]
    assert main(["history", "--limit", "1", "--json"]) == 0
    assert [r["version"] for r in json.loads(capsys.readouterr().out)] == ["v3"]
    assert main(["history", "--environment", "prod"]) == 0
    assert capsys.readouterr().out.strip() == "no deployment matches"


def test_history_refuses_bad_filters(tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["history", "--status", "done"])
    assert exited.value.code == 2


def test_the_cli_statuses_are_the_tracking_database_statuses() -> None:
    from deployflow.tracking.models import DeploymentStatus
    from deployments.cli import DEPLOYMENT_STATUSES

    assert tuple(s.value for s in DeploymentStatus) == DEPLOYMENT_STATUSES


def test_status_says_what_runs_where(tracking: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = db.make_engine(tracking)
    with db.session_factory(engine)() as s, s.begin():
        running = repository.create_deployment(
            s, service="demo", environment="sandbox", version="v4", strategy="canary",
            previous_version="v2", status="running", flow_run_id="run-of-v4",
            started_at=T0 + timedelta(hours=5),
        )  # fmt: skip
        running.current_stage, running.canary_weight = 1, 25
        running.details = {"rollback_requested": {"requested_by": "bob", "reason": "slow"}}
        repository.create_deployment(
            s, service="other", environment="prod", version="a1", strategy="direct",
            status="succeeded", started_at=T0,
        )  # fmt: skip
    engine.dispose()
    assert main(["status", "demo"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "demo / sandbox",
        "  live:          v2 since 2026-01-05 10:05 UTC",
        "  traffic:       25% on v4, 75% on v2",
        "  in progress:   deploy of v4 (stage 2, 25% of the traffic): run run-of-v4",
        "                 rollback asked by bob: slow (at its next look)",
        "  last outcome:  deploy of v3 rolled back: v3 rolled_back: the reason of v3",
        "                 (deployflow report 3)",
        "  previous good: v1",
    ]
    assert main(["status", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [(s["service"], s["environment"], s["live"]) for s in found] == [
        ("demo", "sandbox", "v2"),
        ("other", "prod", "a1"),
    ]
    assert found[0]["in_progress"]["weight"] == 25
    assert found[1]["previous_good"] is None


def test_status_of_a_service_nobody_deployed(
    tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "nobody"]) == 0
    assert (
        capsys.readouterr().out.strip() == "no deploys of nobody recorded in the tracking database"
    )


def test_the_router_split_in_words() -> None:
    from deployflow.providers.base import Instance, RouterState
    from deployflow.status import router_split_in_words

    v1, v2 = Instance("v1", "127.0.0.1", 1), Instance("v2", "127.0.0.1", 2)
    assert router_split_in_words(RouterState(v1.address, None, 0), [v1]) == "all traffic on v1"
    split = router_split_in_words(RouterState(v1.address, v2.address, 10), [v1, v2])
    assert split == "90% on v1, 10% on v2"
    assert router_split_in_words(RouterState(v1.address, v2.address, 100), [v1, v2]) == (
        "all traffic on v2 (v1 ready at 0%)"
    )
    assert router_split_in_words(RouterState("10.0.0.9:80", None, 0), [v1]) == (
        "all traffic on an unknown server at 10.0.0.9:80"
    )
    assert "nowhere" in router_split_in_words(RouterState(None, None, 0), [])


def test_refusals_with_json_print_one_object_naming_the_field(
    tracking: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(rollback("--to", "v3", "--json")) == 2
    [line] = capsys.readouterr().out.splitlines()
    ending = json.loads(line)
    assert (ending["status"], ending["exit_code"]) == ("bad_input", 2)
    assert ending["problems"][0]["field"] == "--to"
    assert "never completed a release" in ending["problems"][0]["message"]


def test_a_rollback_stopped_by_sigterm_says_what_it_reached(
    tracking: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    from prefect.exceptions import TerminationSignal

    import deployments.run
    import flows.manual_rollback

    reached = {
        "status": "failed",
        "version": "v2",
        "deployment_id": 4,
        "interruption": {"signal": "SIGTERM", "traffic_restored": False, "serving": "v2"},
    }

    def stopped(*args: object, **kwargs: object) -> dict:
        monkeypatch.setattr(flows.manual_rollback, "ROLLBACKS_INTERRUPTED", [reached])
        raise TerminationSignal(signal=signal.SIGTERM)

    monkeypatch.setattr(flows.manual_rollback, "ROLLBACKS_INTERRUPTED", [])
    monkeypatch.setattr(deployments.run, "run_rollback", stopped)
    assert main(rollback("--to", "v1", "--json")) == 143
    [line] = capsys.readouterr().out.splitlines()
    ending = json.loads(line)
    assert (ending["status"], ending["signal"], ending["exit_code"]) == (
        "interrupted",
        "SIGTERM",
        143,
    )
    assert (ending["serving"], ending["traffic_restored"], ending["deployment_id"]) == (
        "v2",
        False,
        4,
    )
