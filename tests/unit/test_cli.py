"""The CLI's bad-input contract, in-process (no flow runs here; e2e covers deploys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployments.cli import main

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "sandbox.yaml"


def test_validate_accepts_the_example(
    sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out


def test_validate_lists_every_problem_and_exits_2(
    tmp_path: Path, sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    text = EXAMPLE.read_text().replace("max_error_rate: 0.05", "max_error_rate: 5")
    bad.write_text(text.replace("steps: [5, 25, 50, 100]", "steps: [5, 25, 50]"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "analysis.max_error_rate" in err
    assert "strategy.canary.steps" in err


@pytest.mark.parametrize("version", ["../../etc", "v2\n"])
def test_deploy_with_bad_version_exits_2_before_any_flow(
    sandbox_env: None, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    assert main(["deploy", str(EXAMPLE), "--version", version]) == 2
    assert "--version" in capsys.readouterr().err


def test_deploy_with_bad_environment_exits_2(
    sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", str(EXAMPLE), "--version", "v2", "--environment", "prod; rm"]) == 2
    assert "--environment" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "one of the two"),  # neither a spec file nor a saved service
        ([str(EXAMPLE), "--service", "shop"], "one of the two"),  # both
        (["--service", "Shop Prod"], "'Shop Prod' is not a block name"),
    ],
)
def test_deploy_needs_exactly_one_service_source_and_exits_2_otherwise(
    sandbox_env: None, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert main(["deploy", *args, "--version", "v2"]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.startswith("deployflow: error: ")


def _own_service_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sandbox example rewritten as a team's own service: its values read the team's
    variables, none of the sandbox's."""
    spec = tmp_path / "shop.yaml"
    spec.write_text(EXAMPLE.read_text().replace("DEPLOYFLOW_SANDBOX_", "SHOP_"))
    for name in ("STATE_DIR", "HAPROXY_SOCKET", "FRONTEND_URL", "PROMETHEUS_URL"):
        monkeypatch.setenv(f"SHOP_{name}", "http://127.0.0.1:9" if "URL" in name else "/nowhere")
    return spec


def _started(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The environments the deploy flow would be run for (the flow itself stands in)."""
    import deployments.cli

    environments: list[str] = []

    def run_deploy(spec: object, version: str, environment: str, *rest: object, **named: object):
        environments.append(environment)
        return {"status": "succeeded", "version": version, "strategy": "canary", "stages": []}

    monkeypatch.setattr(deployments.cli, "run_deploy", run_deploy)
    return environments


def test_deploy_of_an_own_service_without_environment_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _own_service_spec(tmp_path, monkeypatch)
    started = _started(monkeypatch)
    assert main(["deploy", str(spec), "--version", "v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deployflow: error: --environment: required"), err
    assert started == []  # nothing started, not recorded as a sandbox deploy
    assert main(["deploy", str(spec), "--version", "v2", "--environment", "production"]) == 0
    assert started == ["production"]


def test_deploy_without_environment_with_json_prints_one_object_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    spec = _own_service_spec(tmp_path, monkeypatch)
    assert main(["deploy", str(spec), "--version", "v2", "--json"]) == 2
    value = json.loads(capsys.readouterr().out)
    assert value["status"] == "bad_input"
    assert value["started"] is False
    assert [p["field"] for p in value["problems"]] == ["--environment"]


def test_deploy_of_a_sandbox_spec_goes_to_sandbox_unless_told(
    sandbox_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _started(monkeypatch)
    assert main(["deploy", str(EXAMPLE), "--version", "v2"]) == 0
    assert main(["deploy", str(EXAMPLE), "--version", "v2", "--environment", "staging"]) == 0
    assert started == ["sandbox", "staging"]


@pytest.mark.parametrize(
    ("text", "sandbox"),
    [
        ("router: {admin_socket: '${DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET}'}", True),
        ("target: {command: ['x', '${DEPLOYFLOW_SANDBOX_STATE_DIR:-/tmp}/a']}", True),
        ("router: {admin_socket: '${SHOP_HAPROXY_SOCKET}'}", False),
        ("# made from ${DEPLOYFLOW_SANDBOX_STATE_DIR}\nservice: shop", False),  # a comment
        ("'${DEPLOYFLOW_SANDBOX_X}': shop", False),  # a key, not a value
        ("service: [unclosed", False),
    ],
)
def test_a_sandbox_spec_is_one_whose_values_read_the_sandbox_variables(
    text: str, sandbox: bool
) -> None:
    from deployflow.spec import reads_sandbox_variables

    assert reads_sandbox_variables(text) is sandbox


def test_unknown_strategy_is_a_usage_error(sandbox_env: None) -> None:
    with pytest.raises(SystemExit) as info:
        main(["deploy", str(EXAMPLE), "--version", "v2", "--strategy", "yolo"])
    assert info.value.code == 2


def test_checks_without_a_pre_checks_section_exits_2(
    tmp_path: Path, sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text()
    spec = tmp_path / "s.yaml"
    spec.write_text(text[: text.index("pre_checks:")] + text[text.index("smoke:") :])
    assert main(["checks", str(spec)]) == 2
    assert "pre_checks" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["/dev/zero", "/"])
def test_validate_of_something_that_is_not_a_file_exits_2_at_once(
    path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", path]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_ctrl_c_during_a_deploy_is_reported_and_exits_130(
    sandbox_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deployments.cli

    def interrupted(*args: object, **kwargs: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(deployments.cli, "run_deploy", interrupted)
    assert main(["deploy", str(EXAMPLE), "--version", "v2"]) == 130
    assert capsys.readouterr().err == "deployflow: deploy of v2 interrupted (SIGINT)\n"


def test_a_period_too_long_for_a_date_is_bad_input_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["stats", "--since", "1000000000w"]) == 2
    assert "--since: '1000000000w': the period may be at most 3660 days" in capsys.readouterr().err


def test_history_and_stats_with_the_database_unreachable_say_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from deployflow.processes import free_port

    url = f"postgresql+psycopg://deployflow:s3cret@127.0.0.1:{free_port()}/tracking"
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
    for command in (["history"], ["stats"]):
        assert main(command) == 1
        err = capsys.readouterr().err
        assert err.startswith("deployflow: the tracking database cannot be used: "), err
        assert "Traceback" not in err
        assert "s3cret" not in err
        assert len(err.strip().splitlines()) == 1


def test_a_deploy_whose_prefect_api_went_away_reports_the_outcome_it_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy finished (its outcome recorded in the tracking database), then its final state
    could not reach Prefect: the caller reports that outcome, not "could not run"."""
    import httpx

    import flows.deploy
    from deployments.run import exit_for, run_deploy

    def api_gone_at_the_end(**kwargs: object) -> object:
        flows.deploy.OUTCOMES_REACHED.append(
            {"version": "v2", "status": "succeeded", "message": "v2 serves all the traffic",
             "flow_run_id": None, "stages": []}
        )  # fmt: skip
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(flows.deploy, "deploy", api_gone_at_the_end)
    result = run_deploy("spec.yaml", "v2", "sandbox", "auto", False)
    assert result["status"] == "succeeded"
    assert exit_for(result["status"]) == 0
    assert result["message"].startswith("v2 serves all the traffic (its final state could not")
    assert "ConnectError" in result["message"]
