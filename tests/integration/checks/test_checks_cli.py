"""`deployflow checks SPEC [--json]`: step 1 alone, exit 0 pass, 1 fail, 2 bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from deployments.cli import main

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[3] / "examples" / "sandbox.yaml"
RUFF = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "json"]


def write_spec(tmp_path: Path, project: Path, lint_target: str) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["pre_checks"] = {
        "checkout": str(project),
        "lint": {"command": [*RUFF, lint_target], "output_format": "ruff-json"},
        "build": {"command": [sys.executable, "-m", "py_compile", "calc.py"]},
    }
    spec = tmp_path / "service.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in {
        "DEPLOYFLOW_SANDBOX_STATE_DIR": str(tmp_path / "state"),
        "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET": str(tmp_path / "haproxy.sock"),
        "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:9",
        "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:9",
    }.items():
        monkeypatch.setenv(name, value)


def test_passing_checks_exit_0_with_json(
    tmp_path: Path, python_project: Path, sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, python_project, "calc.py")
    assert main(["checks", str(spec), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    status = {r["name"]: r["status"] for r in report["results"]}
    assert status["lint"] == "passed"
    assert status["build"] == "passed"
    assert status["review"] == "skipped"
    assert report["passed"] is True


def test_failing_lint_exits_1_with_its_evidence(
    tmp_path: Path, python_project: Path, sandbox_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write_spec(tmp_path, python_project, "broken.py")
    assert main(["checks", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "lint" in out
