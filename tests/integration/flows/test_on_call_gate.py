"""The on-call confirmation on the real Prefect server: a deploy pauses with an input form, and
``deployflow approve`` answers it; nobody answering aborts the deploy before anything started."""

from __future__ import annotations

import threading
from pathlib import Path
from uuid import UUID

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.polling import wait_for
from deployflow.providers.oncall import StaticOnCall
from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger
from deployments.cli import main
from flows.deploy import ReleaseRequest
from flows.oncall import ConfirmationAnswer, confirm_on_call
from tests.integration.flows.test_release_branches import make_spec, run_release

pytestmark = pytest.mark.integration


@flow(name="on-call-gate-under-test")
def gate_only() -> ConfirmationAnswer:
    roster = StaticOnCall(["@alice"]).current()
    return confirm_on_call("shop", "v2", "production", roster, timeout=20)


def paused_run_id() -> UUID | None:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["on-call-gate-under-test"])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
            ),
        )
    return runs[0].id if runs else None


def test_deployflow_approve_answers_the_paused_form(prefect_server, capsys):
    codes: dict[str, int] = {}

    def approver() -> None:
        run_id = wait_for(paused_run_id, timeout=30, interval=0.2, what="a paused run")
        codes["approve"] = main(["approve", str(run_id), "--as", "Alice Example"])
        codes["again"] = main(["approve", str(run_id), "--as", "Bob"])

    thread = threading.Thread(target=approver, daemon=True)
    thread.start()
    answer = gate_only()
    thread.join(timeout=30)

    assert answer == ConfirmationAnswer(confirmed_by="Alice Example")
    assert codes["approve"] == 0
    # Once answered, the form is gone: a second answer is refused, saying why.
    assert codes["again"] == 1
    assert "is not waiting for an on-call confirmation" in capsys.readouterr().err


def test_nobody_confirming_aborts_before_anything_started(prefect_server, tmp_path: Path):
    service = FakeService()
    service.run_stable("v1")
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")
    spec = make_spec(
        tmp_path,
        notifications={
            "on_call": {"kind": "static", "names": ["@alice"], "confirm": {"production": True},
                        "confirm_timeout": "2s"},
        },
    )  # fmt: skip
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(service.notifier,),
        ledger=ledger,
        on_call=StaticOnCall(["@alice"]),
        http_transport=service.transport,
    )

    outcome = run_release(spec, backends, ReleaseRequest("v2", "production"))

    assert outcome.status == "aborted"
    assert outcome.message == "nobody confirmed on call; nothing was started"
    assert service.router.changes == []
    assert {i.version for i in service.target.instances()} == {"v1"}
    assert "On-call: @alice" in service.notifier.messages[0]
    # The run went on after the pause to record why it stopped.
    with ledger._sessions() as s:
        row = repository.get_deployment(s, outcome.require_id())
        assert row.status == "aborted"


def test_approve_refuses_what_is_not_a_run_id(capsys):
    assert main(["approve", "not-a-uuid"]) == 2
    assert "RUN_ID: 'not-a-uuid' is not a flow run id" in capsys.readouterr().err
