"""The command line under fuzzed arguments and files: never a traceback, bad input exits 2 with a
short message, and a deploy starts only from input that every check accepts.

`make test` runs a few hundred cases; `make fuzz` (nightly-sized) sets DEPLOYFLOW_FUZZ_EXAMPLES.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deployments.cli as cli
from deployflow.spec import SpecError, load_spec, validate_environment, validate_version

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
FUZZ = settings(
    max_examples=int(os.environ.get("DEPLOYFLOW_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SANDBOX_ENV = {
    "DEPLOYFLOW_SANDBOX_STATE_DIR": "/nonexistent/state",
    "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET": "/nonexistent/haproxy.sock",
    "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:9",
    "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:9",
}
MAX_MESSAGE = 64 * 1024

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
flag = st.sampled_from(
    ["--version", "--environment", "--strategy", "--dry-run", "--json", "--tracking-block"]
)
good_values = st.sampled_from(["v2", "1.2.3+build.7", "sandbox", "production", "canary", "auto"])


@pytest.fixture
def spec_files(tmp_path: Path) -> dict[str, Path]:
    """Spec paths of every kind a user can hand over: good, broken, missing, not a file."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(EXAMPLE.read_text().replace("steps: [5, 25, 50, 100]", "steps: [50, 5]"))
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00service: x\n")
    return {
        "good": EXAMPLE,
        "broken": broken,
        "binary": binary,
        "missing": tmp_path / "missing.yaml",
        "directory": tmp_path,
    }


def _accepted(version: str, environment: str, spec: Path) -> bool:
    try:
        validate_version(version, "--version")
        validate_environment(environment, "--environment")
        load_spec(spec)
    except SpecError:
        return False
    return True


@FUZZ
@given(
    command=st.sampled_from(["validate", "deploy"]),
    which=st.sampled_from(["good", "broken", "binary", "missing", "directory"]),
    extra=st.lists(st.one_of(flag, good_values, text), max_size=6),
)
def test_any_command_line_exits_cleanly_and_deploys_only_accepted_input(
    monkeypatch: pytest.MonkeyPatch,
    spec_files: dict[str, Path],
    command: str,
    which: str,
    extra: list[str],
) -> None:
    for name, value in SANDBOX_ENV.items():
        monkeypatch.setenv(name, value)
    started: list[dict[str, Any]] = []

    def run_deploy(
        spec_path: str, version: str, environment: str, *rest: Any, **named: Any
    ) -> dict[str, Any]:
        # Stands in for the Prefect flow: the property is about what reaches it, not what it does.
        started.append({"spec": spec_path, "version": version, "environment": environment})
        return {"status": "succeeded", "version": version, "strategy": "canary", "stages": []}

    monkeypatch.setattr(cli, "run_deploy", run_deploy)
    argv = [command, str(spec_files[which]), *extra]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            code = exc.code if isinstance(exc.code, int) else 2

    assert code in (0, 1, 2), (argv, code)
    assert "Traceback" not in err.getvalue()
    assert len(err.getvalue()) < MAX_MESSAGE
    if code == 2:
        assert err.getvalue().strip(), f"exit 2 without a message: {argv}"
    for run in started:
        assert _accepted(run["version"], run["environment"], Path(run["spec"])), (argv, run)
