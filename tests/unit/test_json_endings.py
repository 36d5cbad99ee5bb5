"""``--json`` in every ending: the builder of the one object (``deployments.endings``) and the CLI
printing exactly one object on stdout for bad input, usage errors, an interruption and a
tracking database that cannot be used. (Real signals to a real deploy: tests/e2e/test_signals.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deployments import endings
from deployments.cli import main

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "sandbox.yaml"


def one_object(out: str) -> dict[str, Any]:
    """stdout holds exactly one JSON object (and nothing else)."""
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    value = json.loads(lines[0])
    assert isinstance(value, dict), value
    return value


@pytest.mark.parametrize(
    ("message", "field", "says"),
    [
        (
            "argument --strategy: invalid choice: 'yolo' (choose from 'auto', 'canary')",
            "--strategy",
            "invalid choice: 'yolo' (choose from 'auto', 'canary')",
        ),
        ("argument -h/--help: ignored explicit argument 'x'", "--help", "ignored explicit"),
        ("the following arguments are required: --version", "--version", "required"),
        ("unrecognized arguments: --colour red", "--colour", "not an option"),
        ("something argparse never said", None, "something argparse never said"),
    ],
)
def test_argparse_errors_name_the_field_they_are_about(
    message: str, field: str | None, says: str
) -> None:
    [found] = endings.argparse_problems(message)
    assert found["field"] == field
    assert says in (found["message"] or "")


def test_every_required_argument_missing_is_its_own_problem() -> None:
    found = endings.argparse_problems("the following arguments are required: --version, SPEC")
    assert [p["field"] for p in found] == ["--version", "SPEC"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("--limit: give a whole number of deploys, 1 or more (got 0)", "--limit"),
        ("RUN_ID: 'x' is not a flow run id", "RUN_ID"),
        ("pre_checks.review.credentials_block: no block", "pre_checks.review.credentials_block"),
        ("give the service as a spec file or a block, one of the two", None),
    ],
)
def test_a_message_that_names_its_field_first_is_split(message: str, field: str | None) -> None:
    found = endings.split_field(message)
    assert found["field"] == field
    assert found["message"]
    assert found["message"] in message


def test_a_bad_parameter_is_named_once_and_exits_2() -> None:
    value = endings.spec_problems("--version", [("--version", "'v 2' is not allowed: use ...")])
    assert value["error"] == "--version: 'v 2' is not allowed: use ..."
    assert value["problems"] == [{"field": "--version", "message": "'v 2' is not allowed: use ..."}]
    assert (value["status"], value["started"], value["exit_code"]) == ("bad_input", False, 2)


def test_an_interrupted_deploy_reports_what_the_flow_reached() -> None:
    reached = {
        "status": "failed",
        "version": "v3",
        "deployment_id": 7,
        "flow_run_id": "abc",
        "stages": [{"index": 0, "weight": 5}],
        "message": "interrupted (SIGTERM): all traffic back on v1, stopped v3",
        "interruption": {"signal": "SIGTERM", "traffic_restored": True, "serving": "v1"},
    }
    value = endings.interrupted("SIGTERM", 143, reached, what="the deploy of v3", version="v3")
    assert value["status"] == "interrupted"
    assert value["recorded_status"] == "failed"
    assert (value["traffic_restored"], value["serving"]) == (True, "v1")
    assert (value["deployment_id"], value["exit_code"], value["signal"]) == (7, 143, "SIGTERM")
    assert value["stages"] == reached["stages"]


def test_an_interruption_before_anything_was_reached_claims_nothing() -> None:
    value = endings.interrupted("SIGINT", 130, None, what="the deploy of v3", version="v3")
    assert (value["traffic_restored"], value["serving"], value["deployment_id"]) == (
        None,
        None,
        None,
    )
    assert value["exit_code"] == 130
    assert "deployflow status" in value["message"]


def test_the_ending_prints_one_object_at_most(capsys: pytest.CaptureFixture[str]) -> None:
    ending = endings.JsonEnding(wanted=True)
    ending.emit({"a": 1})
    ending.fallback(1)
    ending.emit_if_wanted({"b": 2})
    assert one_object(capsys.readouterr().out) == {"a": 1}
    quiet = endings.JsonEnding(wanted=False)
    quiet.emit_if_wanted({"c": 3})
    quiet.fallback(2)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["deploy", "--json", "--version", "v2"], "SPEC"),  # neither a spec nor a service
        (["deploy", str(EXAMPLE), "--json", "--version", "../x"], "--version"),
        (
            ["deploy", str(EXAMPLE), "--json", "--version", "v2", "--environment", "a b"],
            "--environment",
        ),
        (["deploy", str(EXAMPLE), "--json", "--version", "v2", "--strategy", "yolo"], "--strategy"),
        (["deploy", "--json"], "--version"),
        (["history", "--json", "--limit", "0"], "--limit"),
        (["stats", "--json", "--since", "1000000000w"], "--since"),
        (["status", "--json", "--environment", " "], "--environment"),
        (["validate", "/nonexistent/spec.yaml", "--json"], "(file)"),
        (["rollback", "shop", "--json"], "--environment"),
    ],
)
def test_every_bad_input_with_json_prints_one_object_naming_the_field(
    sandbox_env: None, capsys: pytest.CaptureFixture[str], argv: list[str], field: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    captured = capsys.readouterr()
    value = one_object(captured.out)
    assert value["exit_code"] == 2
    assert value["status"] == "bad_input"
    assert value["problems"], value
    assert field in [p["field"] for p in value["problems"]], value
    assert captured.err  # people still read it on stderr


def test_a_deploy_that_ends_prints_its_exit_code_in_its_object(
    sandbox_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deployments.cli

    def rolled_back(*args: object, **kwargs: object) -> dict[str, Any]:
        return {"status": "rolled_back", "version": "v3", "stages": []}

    monkeypatch.setattr(deployments.cli, "run_deploy", rolled_back)
    assert main(["deploy", str(EXAMPLE), "--version", "v3", "--json"]) == 3
    assert one_object(capsys.readouterr().out) == {
        "status": "rolled_back",
        "version": "v3",
        "stages": [],
        "exit_code": 3,
    }


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_an_interrupted_deploy_prints_the_outcome_it_reached(
    sandbox_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    signal_name: str,
) -> None:
    import signal

    from prefect.exceptions import TerminationSignal

    import deployments.cli

    recorded: list[dict[str, Any]] = []
    reached = {
        "status": "failed",
        "version": "v2",
        "deployment_id": 12,
        "message": "interrupted: all traffic back on v1, stopped v2",
        "interruption": {"signal": signal_name, "traffic_restored": True, "serving": "v1"},
    }

    def interrupted(*args: object, **kwargs: object) -> dict[str, Any]:
        recorded.append(reached)  # what the flow records as it handles the signal
        if signal_name == "SIGINT":
            raise KeyboardInterrupt
        raise TerminationSignal(signal=signal.SIGTERM)

    monkeypatch.setattr(deployments.cli, "run_deploy", interrupted)
    monkeypatch.setattr(deployments.cli, "reached_outcomes", lambda: list(recorded))
    code = main(["deploy", str(EXAMPLE), "--version", "v2", "--json"])
    assert code == {"SIGINT": 130, "SIGTERM": 143}[signal_name]
    value = one_object(capsys.readouterr().out)
    assert value["exit_code"] == code
    assert value["signal"] == signal_name
    assert (value["traffic_restored"], value["serving"], value["deployment_id"]) == (
        True,
        "v1",
        12,
    )


def test_a_tracking_database_that_cannot_be_used_is_one_object_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployflow.processes import free_port

    url = f"postgresql+psycopg://deployflow:s3cret@127.0.0.1:{free_port()}/tracking"
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
    assert main(["history", "--json"]) == 1
    out = capsys.readouterr().out
    value = one_object(out)
    assert value["exit_code"] == 1
    assert value["error"].startswith("the tracking database cannot be used")
    assert "s3cret" not in out
