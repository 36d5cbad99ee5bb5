"""A real Prefect server (prefect_test_harness) and the real sandbox for whole deploys."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.polling import wait_for
from deployflow.sandbox.supervisor import SANDBOX_RPS, Sandbox, SandboxRouter
from deployflow.spec import load_spec
from tests.backends import build_metrics

EXAMPLE_SPEC = Path(__file__).parents[2] / "examples" / "sandbox.yaml"
# Stages short enough for the suite, with the judge at its default confidences: a stage not
# shown healthy or harmful within 12 s follows the sandbox environment's on_inconclusive rule
# (promote on estimates within the limits); harm is still judged as a team's deploys are.
FAST_EVIDENCE = {"DEPLOYFLOW_MAX_STAGE": "12s"}
FAULTS = json.dumps({"v3": {"error_rate": 0.2}, "v8": {"latency_ms": 120}})


@contextlib.contextmanager
def running_sandbox(
    tmp_path_factory: pytest.TempPathFactory,
    spec_path: Path,
    router: SandboxRouter = "haproxy",
    rps: float = SANDBOX_RPS,
    settings: dict[str, str] | None = None,
) -> Iterator[Sandbox]:
    """The sandbox with v1 live and traffic flowing, and the environment the spec at
    ``spec_path`` reads set (FAST_EVIDENCE, DEPLOYFLOW_OBSERVE=4s); restored on exit."""
    state = tmp_path_factory.mktemp("sandbox")
    data = tmp_path_factory.mktemp("data")
    saved = dict(os.environ)
    with Sandbox(state, env={"DEPLOYFLOW_DEMO_FAULTS": FAULTS}, rps=rps, router=router) as sb:
        os.environ.update(sb.env_vars())
        os.environ["DEPLOYFLOW_DEMO_FAULTS"] = FAULTS
        os.environ["DEPLOYFLOW_DATA_DIR"] = str(data)
        os.environ["DEPLOYFLOW_OBSERVE"] = "4s"
        os.environ.update(FAST_EVIDENCE)
        os.environ.update(settings or {})
        os.environ.pop("DEPLOYFLOW_DATABASE_URL", None)
        try:
            spec = load_spec(spec_path)
            sb.wait_for_metrics("v1", timeout=60)
            metrics = build_metrics(spec)
            wait_for(
                lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
                timeout=60,
                interval=0.5,
                what="a P95 baseline for v1",
            )
            yield sb
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[Sandbox]:
    """The sandbox with v1 live and traffic flowing; env vars set for the spec; torn down after."""
    with running_sandbox(tmp_path_factory, EXAMPLE_SPEC) as sb:
        yield sb
