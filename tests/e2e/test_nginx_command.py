"""Whole deploys through a real nginx with the user's own commands as the target.

The sandbox runs with ``--router nginx``; the spec is examples/sandbox-command.yaml (its hooks,
examples/hooks/sandbox_target.py, start and stop the demo app) cut to two stages. In order on
one sandbox: v2 is promoted over v1, then v3 (20% errors) is rolled back to v2. A hook that fails
or prints garbage is tested on the target itself (tests/integration/sandbox), a start that fails
on the flow with in-memory backends (tests/integration/flows): a deploy here costs a minute.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from flows.deploy import deploy
from tests.backends import build_router, build_target
from tests.e2e.conftest import running_sandbox

pytestmark = pytest.mark.e2e

COMMAND_SPEC = Path(__file__).parents[2] / "examples" / "sandbox-command.yaml"
STAGES = ("  steps: [5, 25, 50, 100]\n", "  steps: [50, 100]\n")


@contextlib.contextmanager
def command_spec() -> Iterator[Path]:
    """The command example with two stages and no pre-checks (they are not what this module
    tests), beside it, so its relative hook paths hold."""
    text = COMMAND_SPEC.read_text()
    text = text[: text.index("pre_checks:")] + text[text.index("smoke:") :]
    assert STAGES[0] in text
    text = text.replace(*STAGES)
    path = COMMAND_SPEC.parent / f".test-nginx-command-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(text)
    try:
        yield path
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def spec_file() -> Iterator[Path]:
    with command_spec() as path:
        yield path


@pytest.fixture(scope="module")
def nginx_sandbox(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: str, spec_file: Path
) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path_factory, spec_file, router="nginx") as sb:
        yield sb


def run(spec_file: Path, version: str) -> dict:
    state = deploy(
        environment="sandbox", spec_path=str(spec_file), version=version, return_state=True
    )
    data = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(data, dict), f"the flow crashed: {data!r}"
    return data


def served(sandbox: Sandbox, requests: int = 20) -> Counter[str]:
    with httpx.Client(timeout=5.0) as client:
        return Counter(
            client.get(sandbox.frontend_url + "/api/items").json()["version"]
            for _ in range(requests)
        )


def running(spec_file: Path) -> dict:
    return {i.version: i for i in build_target(load_spec(spec_file)).instances()}


def test_a_healthy_version_is_promoted_through_nginx_by_the_hooks(
    nginx_sandbox: Sandbox, spec_file: Path
) -> None:
    result = run(spec_file, "v2")
    assert result["status"] == "succeeded", result["message"]
    assert [s["weight"] for s in result["stages"]] == [50, 100]
    assert all(s["verdict"] == "promote" for s in result["stages"])
    # The status hook lists v2 only: the stop hook retired v1 after verification.
    versions = running(spec_file)
    assert set(versions) == {"v2"}
    # What nginx serves (its state server, and the answers users get) is v2 alone.
    state = build_router(load_spec(spec_file)).state()
    assert (state.stable, state.canary, state.canary_weight) == (versions["v2"].address, None, 0)
    assert served(nginx_sandbox) == Counter({"v2": 20})


def test_a_bad_version_is_rolled_back_to_the_stable_one(
    nginx_sandbox: Sandbox, spec_file: Path
) -> None:
    result = run(spec_file, "v3")
    assert result["status"] == "rolled_back", result["message"]
    rollback = result["rollback"]
    assert (rollback["stage"], rollback["metric"]) == (0, "error_rate")
    assert rollback["value"] > rollback["threshold"] == 0.05
    assert rollback["verified"] is True
    versions = running(spec_file)
    assert set(versions) == {"v2"}, "the stop hook must have stopped the canary"
    state = build_router(load_spec(spec_file)).state()
    assert (state.stable, state.canary, state.canary_weight) == (versions["v2"].address, None, 0)
    assert served(nginx_sandbox) == Counter({"v2": 20})
