"""A healthy canary of a service at tens of requests per second, in production, at the judge's
default confidences: promoted on evidence, stage by stage, never paused for a person nor rolled
back for what could not be shown yet."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from flows.deploy import deploy
from tests.e2e.conftest import EXAMPLE_SPEC, running_sandbox

pytestmark = pytest.mark.e2e

RPS = 30.0  # in all: 3 canary requests/s at the first step


@pytest.fixture(scope="module")
def low_traffic_spec() -> Iterator[Path]:
    text = EXAMPLE_SPEC.read_text()
    steps, limits = "steps: [5, 25, 50, 100]", "  failure_limit: 0\n"
    assert steps in text
    assert limits in text
    path = EXAMPLE_SPEC.parent / ".test-low-traffic.yaml"
    # Asked, a person would have 5 s: a pause shows as a rollback instead of a hung test.
    path.write_text(
        text.replace(steps, "steps: [10, 100]").replace(limits, limits + "  decision_timeout: 5s\n")
    )
    try:
        yield path
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def quiet_sandbox(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: str, low_traffic_spec: Path
) -> Iterator[Sandbox]:
    # Stages of 4 s that may observe up to 90 s: time enough for evidence at 3 requests/s.
    with running_sandbox(
        tmp_path_factory, low_traffic_spec, rps=RPS, settings={"DEPLOYFLOW_MAX_STAGE": "90s"}
    ) as sb:
        yield sb


def test_a_healthy_canary_at_low_traffic_is_promoted_on_evidence(
    quiet_sandbox: Sandbox, low_traffic_spec: Path
) -> None:
    # A production environment (on_inconclusive: pause) that asks for no on-call confirmation.
    state = deploy(
        spec_path=str(low_traffic_spec), version="v2", environment="prod-eu", return_state=True
    )
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "succeeded", result["message"]
    stages = result["stages"]
    assert [(s["weight"], s["verdict"]) for s in stages] == [(10, "promote"), (100, "promote")]
    for stage in stages:
        # Shown below the limit, not promoted by a rule or a person.
        assert "below the 5.0% limit" in stage["explanation"], stage["explanation"]
        assert "promoted by" not in stage["explanation"]
        assert "promoted on its estimates" not in stage["explanation"]
    first = stages[0]
    took = (
        datetime.fromisoformat(first["finished_at"]) - datetime.fromisoformat(first["started_at"])
    ).total_seconds()
    # 3 canary requests/s cannot show it healthy in the 4 s observe time: the stage kept
    # observing until its evidence was in, rather than rolling back or asking.
    assert took > 8.0, took
