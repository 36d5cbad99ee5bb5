"""What a person reads in a deploy run's log in the Prefect UI: no Prefect warning about timeouts
in worker threads (the pre-deployment checks run side by side), no raw reprs, no Slack markup;
a deploy that rolled back ends with one ERROR line carrying its outcome and no traceback, also
the way a worker or ``serve`` runs it (Prefect's engine raises the Failed state's exception)."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect import State, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.flow_engine import run_flow

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.polling import wait_for
from deployflow.release import ReleaseNotSucceeded
from deployflow.spec import ServiceSpec
from deployflow.tracking.ledger import Ledger
from flows.deploy import ReleaseRequest, deploy, finish, release
from tests.e2e.team_conftest_helpers import run_logs_once_finished
from tests.integration.flows.helpers import make_spec
from tests.samples import nothing_running_spec

pytestmark = pytest.mark.integration

# What must never reach a run's log: Prefect's worker-thread timeout warning, Python reprs of
# empty or absent values and of dataclasses, Slack's bold, code and link markup.
NOISE = [
    re.compile(r"Timeout of [\d.]+ seconds configured for this task"),
    re.compile(r"running in a worker thread"),
    re.compile(r": (\[\]|None|\(\)|\{\})$", re.MULTILINE),
    re.compile(r"\b[A-Z]\w*\(\w+=[^)]*\)"),  # Fault(error_rate=0.0, ...)
    re.compile(r"\*\w[^*\n]*\*|`[^`\n]+`|<https?://[^>]*>"),
]

# A service whose dry run needs nothing running, with pre-deployment checks (run side by side).
DRY_SPEC = (
    nothing_running_spec("quiet")
    + """\
pre_checks:
  checkout: CHECKOUT
  build: {command: ["true"]}
"""
)


def noise_in(logs: list[tuple[int, str]]) -> list[str]:
    return [m for _, m in logs if any(p.search(m) for p in NOISE)]


def logs_of(run_id: UUID) -> list[tuple[int, str]]:
    with get_client(sync_client=True) as client:
        logs: list[tuple[int, str]] = wait_for(
            lambda: run_logs_once_finished(client, run_id),
            timeout=60,
            interval=0.5,
            what="the run's logs up to its final state",
        )
    return logs


def test_a_dry_run_with_checks_side_by_side_logs_no_warning_and_no_repr(
    prefect_server, tmp_path: Path
):
    spec = tmp_path / "quiet.yaml"
    spec.write_text(DRY_SPEC.replace("CHECKOUT", str(tmp_path)))

    state = deploy(
        environment="sandbox",
        spec_path=str(spec),
        version="v2",
        dry_run=True,
        tracking_block=None,
        return_state=True,
    )

    assert state.is_completed(), state.message
    logs = logs_of(state.state_details.flow_run_id)
    assert any("check: build" in m or "build: passed" in m for _, m in logs), logs
    assert noise_in(logs) == []
    assert [m for level, m in logs if level >= logging.WARNING] == []
    assert any("on call: nobody named in notifications.on_call" in m for _, m in logs), logs
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
        assert run.tags == ["outcome:dry-run"]
        assert run.name == "deploy quiet v2 to sandbox"  # service, version, environment


@flow(name="deploy-log-under-test")
def deploy_on_fakes(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> State[Any]:
    return finish(release(spec, backends, request), backends)


def test_a_rolled_back_run_ends_with_one_error_line_and_no_traceback(
    prefect_server, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    service = FakeService()
    service.run_stable("v1")
    service.behave("v3", error_rate=0.3)
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
        http_transport=service.transport,
    )
    parameters = {
        "spec": make_spec(tmp_path),
        "backends": backends,
        "request": ReleaseRequest("v3", "log-test"),
    }

    # What a worker's or serve's process does: the result is raised, the engine logs what raised.
    engine_log = logging.getLogger("prefect.flow_runs")
    with pytest.raises(ReleaseNotSucceeded):
        run_flow(deploy_on_fakes, parameters=parameters, error_logger=engine_log)

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["deploy-log-under-test"]))
        )
    assert run.state is not None
    assert (run.state.type.value, run.state.name) == ("FAILED", "Failed")
    assert run.tags == ["outcome:rolled-back"]
    logs = logs_of(run.id)
    errors = [m for level, m in logs if level >= logging.ERROR]
    assert len(errors) == 1, "\n".join(f"{lv} {m[:150]}" for lv, m in logs)
    assert errors[0].startswith("deploy of shop v3 to log-test rolled back: rolled back to v1: ")
    assert noise_in(logs) == []
    # Nor does the process's own log show the engine's traceback of the outcome.
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.ERROR]
