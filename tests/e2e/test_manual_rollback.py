"""A person's rollback on the sandbox: v2 released (direct, succeeds), then ``deployflow rollback``
from a terminal puts v1 back: traffic checked through the real router, and a probe counting bad
answers through the frontend the whole time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deployflow.probe import ProbeTraffic
from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import SmokeRequest, load_spec
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )  # fmt: skip


def test_release_then_roll_back_from_the_command_line(
    sandbox: Sandbox, prefect_server: str
) -> None:
    state = deploy(spec_path=str(EXAMPLE_SPEC), version="v2", strategy="direct", return_state=True)
    released = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(released, dict), released
    assert released["status"] == "succeeded", released["message"]
    spec = load_spec(EXAMPLE_SPEC)
    assert {i.version for i in build_target(spec).instances()} == {"v2"}

    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    # Refused (nothing touched): the live version, and a version never released.
    for to, says in (("v2", "v2 is the live version"), ("v7", "v7 never completed a release")):
        proc = cli("rollback", "demo", "--spec", str(EXAMPLE_SPEC), "--environment", "sandbox",
                   "--to", to, env=env)  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert says in proc.stderr
    assert {i.version for i in build_target(spec).instances()} == {"v2"}

    probe = ProbeTraffic(sandbox.frontend_url, [SmokeRequest(name="items", path="/api/items")],
                         rate=20.0)  # fmt: skip
    with probe:
        proc = cli(
            "rollback", "demo", "--spec", str(EXAMPLE_SPEC), "--environment", "sandbox",
            "--reason", "search is slow", "--as", "e2e", "--json", env=env,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "rolled_back"
    assert (result["version"], result["rolled_back_to"]) == ("v2", "v1")
    assert result["rollback"]["verified"] is True
    assert result["rollback"]["reason"] == "rollback asked by e2e: search is slow"
    assert result["restore_seconds"] < 5

    # The real router: everything on v1; v2 stopped; the frontend answers v1.
    versions = {i.version: i for i in build_target(spec).instances()}
    assert set(versions) == {"v1"}
    router = build_router(spec).state()
    assert (router.stable, router.canary_weight) == (versions["v1"].address, 0)
    served = {httpx.get(sandbox.frontend_url + "/api/items").json()["version"] for _ in range(10)}
    assert served == {"v1"}
    tally = probe.tally
    assert tally.sent > 0
    assert (tally.failed, tally.unanswered) == (0, 0), tally.describe()

    # The rollback is in history and status, and its incident report is one command away.
    history = cli("history", "--service", "demo", "--limit", "1", env=env)
    assert "rollback   rolled_back" in history.stdout, history.stdout
    status = cli("status", "demo", "--spec", str(EXAMPLE_SPEC), env=env)
    assert "live:          v1" in status.stdout, status.stdout
    assert "router: all traffic on v1" in status.stdout, status.stdout
    report = cli("report", str(result["deployment_id"]), env=env)
    assert report.returncode == 0, report.stderr
    assert "search is slow" in report.stdout
