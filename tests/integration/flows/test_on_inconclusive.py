"""A stage shown neither healthy nor harmful in its time, on the real Prefect server with
in-memory backends: each ``on_inconclusive`` rule as a deploy lives it. The canary here is
always within or around the limit on too few requests to say: doubt, never harm."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from prefect import State, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.polling import wait_for
from deployflow.spec import ServiceSpec
from deployflow.tracking.ledger import Ledger
from deployments.cli import main
from flows.deploy import ReleaseRequest, finish, release
from tests.integration.flows.helpers import make_spec

pytestmark = pytest.mark.integration


@flow(name="unproven-deploy-under-test")
def deploy_and_finish(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> State:
    return finish(release(spec.for_environment(request.environment), backends, request), backends)


def start(
    tmp_path: Path, environment: str, errors: int, **analysis: str
) -> tuple[FakeService, ServiceSpec, Backends, ReleaseRequest]:
    """v1 live; v2 answers ``errors`` of its 40 requests with errors, whatever the window: its
    error rate can be neither shown below 5% nor above it."""
    service = FakeService()
    service.run_stable("v1")
    service.behave("v2", error_rate=errors / 40, requests=40.0)
    spec = make_spec(
        tmp_path,
        analysis={"interval": "5ms", "window": "1s", "baseline_window": "1s", "min_requests": 10,
                  "max_stage_duration": "60ms", **analysis},
        strategy={"kind": "canary", "steps": [25, 100], "observe": "10ms"},
    )  # fmt: skip
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
        http_transport=service.transport,
    )
    return service, spec, backends, ReleaseRequest("v2", environment)


def run_tags(state: State) -> list[str]:
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        return list(client.read_flow_run(run_id).tags)


def outcome_of(state: State) -> dict[str, Any]:
    data = state.result(raise_on_failure=False)
    return data if isinstance(data, dict) else data.outcome  # type: ignore[no-any-return]


def test_promote_goes_on_with_estimates_within_the_limits_and_says_so(prefect_server, tmp_path):
    service, spec, backends, request = start(tmp_path, "staging", 1, on_inconclusive="promote")
    state = deploy_and_finish(spec, backends, request, return_state=True)
    assert state.is_completed(), state.message
    stage = outcome_of(state)["stages"][0]
    assert stage["verdict"] == "promote"
    assert stage["explanation"].startswith("promoted on its estimates within the limits")
    assert {i.version for i in service.target.instances()} == {"v2"}


def test_promote_rolls_back_estimates_beyond_the_limits_as_doubt_not_harm(prefect_server, tmp_path):
    # 3 of 40 (7.5%) is above the limit but not beyond doubt; "staging" defaults to promote.
    service, spec, backends, request = start(tmp_path, "staging", 3)
    state = deploy_and_finish(spec, backends, request, return_state=True)
    assert state.is_failed(), state.message
    assert "outcome:rolled-back" in run_tags(state)
    rollback = outcome_of(state)["rollback"]
    assert (rollback["metric"], rollback["stage"]) == ("inconclusive", 0)
    assert (
        "error rate 7.5% over 40 requests, not yet shown below the 5.0% limit"
        in (rollback["reason"])
    )
    assert "its estimates are not within the limits" in rollback["reason"]
    assert service.router.state().canary_weight == 0


def test_rollback_rolls_back_saying_it_was_the_rule(prefect_server, tmp_path):
    service, spec, backends, request = start(tmp_path, "staging", 1, on_inconclusive="rollback")
    state = deploy_and_finish(spec, backends, request, return_state=True)
    assert state.is_failed(), state.message
    assert "outcome:rolled-back" in run_tags(state)
    rollback = outcome_of(state)["rollback"]
    assert rollback["metric"] == "inconclusive"
    assert rollback["reason"].startswith("not shown healthy or harmful within 0.1 s: ")
    assert rollback["reason"].endswith("on_inconclusive is 'rollback'")
    assert {i.version for i in service.target.instances()} == {"v1"}


def paused_deploys() -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["unproven-deploy-under-test"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )


def test_in_production_a_person_is_asked_and_their_answer_promotes(prefect_server, tmp_path):
    # No on_inconclusive in the spec: production's default is to ask.
    service, spec, backends, request = start(tmp_path, "production", 1, decision_timeout="60s")
    seen: dict[str, object] = {}

    def person() -> None:
        [paused] = wait_for(
            lambda: paused_deploys() or None, timeout=120, interval=0.2, what="a paused deploy"
        )
        assert paused.state is not None
        keyset = paused.state.state_details.run_input_keyset
        assert keyset is not None
        with get_client(sync_client=True) as client:
            seen["form"] = json.loads(client.read_flow_run_input(paused.id, keyset["description"]))
        seen["weight"] = service.router.state().canary_weight
        service.behave("v2", error_rate=0.0, requests=4000.0)  # stage 2 shows it healthy
        seen["code"] = main(["approve", str(paused.id), "--as", "Alice Example"])

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    state = deploy_and_finish(spec, backends, request, return_state=True)
    thread.join(timeout=120)

    assert state.is_completed(), state.message
    assert seen["code"] == 0
    form = str(seen["form"])
    assert "stage 1 (25% canary) was shown neither healthy nor harmful in its time" in form
    assert "Tick 'approved' to promote it to 100%; leave it unticked to roll back." in form
    assert seen["weight"] == 25  # traffic held where it was while the person decided
    stage = outcome_of(state)["stages"][0]
    assert stage["verdict"] == "promote"
    assert stage["explanation"].startswith("promoted by Alice Example")


def test_in_production_nobody_answering_rolls_back_and_says_why(prefect_server, tmp_path):
    service, spec, backends, request = start(tmp_path, "prod-eu", 1, decision_timeout="2s")
    state = deploy_and_finish(spec, backends, request, return_state=True)
    assert state.is_failed(), state.message
    assert "outcome:rolled-back" in run_tags(state)
    rollback = outcome_of(state)["rollback"]
    assert rollback["metric"] == "manual gate"
    assert rollback["reason"].startswith("nobody decided within 2 s after: not shown healthy")
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert {i.version for i in service.target.instances()} == {"v1"}
