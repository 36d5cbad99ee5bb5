"""The on-call confirmation on the real Prefect server: a deploy pauses with an input form, and
``deployflow approve`` answers it; nobody answering aborts the deploy before anything started."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from uuid import UUID

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
from prefect.client.schemas.objects import StateType
from prefect.events import Event
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from pydantic import SecretStr

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.fakes.grafana_api import FakeGrafanaAPI
from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.polling import wait_for
from deployflow.providers.grafana import GrafanaAnnotator
from deployflow.providers.oncall import StaticOnCall
from deployflow.spec import ServiceSpec
from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger
from deployments.cli import main
from flows.deploy import ReleaseRequest, finish, release
from flows.manual_rollback import RollbackRequest, RollbackResult, finish_rollback, roll_back_now
from flows.oncall import ConfirmationAnswer, confirm_on_call
from tasks.audiences import prefect_audiences
from tests.integration.flows.helpers import make_spec

pytestmark = pytest.mark.integration


@flow(name="on-call-gate-under-test")
def gate_only() -> ConfirmationAnswer:
    roster = StaticOnCall(["@alice"]).current()
    return confirm_on_call("shop", "v2", "production", roster, timeout=10)


def paused_run_id(flow_name: str = "on-call-gate-under-test") -> UUID | None:
    """The id of a paused run of the flow ``flow_name``, None while there is none."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
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


@flow(name="deploy-under-test")
def deploy_and_finish(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> State:
    return finish(release(spec, backends, request), backends)


def deploy_events(environment: str) -> list[Event] | None:
    """The deploy events about ``environment``, oldest first; None until the ending arrived (the
    server persists events in batches, a few seconds late)."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(prefix=["deployflow.deploy."]),
                related=EventRelatedFilter(id=[f"deployflow.environment.{environment}"]),
            ),
            limit=50,
        )
    found = sorted(page.events, key=lambda e: e.occurred)
    return found if any(e.event == "deployflow.deploy.aborted" for e in found) else None


def test_nobody_confirming_aborts_before_anything_started(prefect_server, tmp_path: Path):
    """Also: the deploy's events reach Prefect's event feed, about the service, version and
    environment; the Slack thread of the deploy ends with the verdict; Grafana has its region."""
    slack = FakeSlackAPI(token="xoxb-gate", channels=["deploys"]).start()
    grafana = FakeGrafanaAPI(token="glsa-gate").start()
    service = FakeService()
    service.run_stable("v1")
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")
    spec = make_spec(
        tmp_path,
        notifications={
            "on_call": {"kind": "static", "names": ["@alice"], "confirm": {"gate-prod": True},
                        "confirm_timeout": "2s"},
        },
    )  # fmt: skip
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(
            service.notifier,
            SlackNotifier(SecretStr("xoxb-gate"), "#deploys", base_url=slack.base_url),
        ),
        ledger=ledger,
        on_call=StaticOnCall(["@alice"]),
        annotators=(GrafanaAnnotator(SecretStr("glsa-gate"), grafana.base_url, "shop"),),
        http_transport=service.transport,
    ).telling(prefect_audiences())  # as connect_backends builds them: with Prefect's event feed

    state = deploy_and_finish(spec, backends, ReleaseRequest("v2", "gate-prod"), return_state=True)

    assert state.name == "Failed"
    assert state.message == "v2 aborted: nobody confirmed on call; nothing was started"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).tags == ["outcome:aborted"]
    assert service.router.changes == []
    assert {i.version for i in service.target.instances()} == {"v1"}
    assert "On-call: @alice" in service.notifier.messages[0]
    # The run went on after the pause to record why it stopped.
    [(row_id, status)] = ledger_rows(ledger)
    assert status == "aborted"
    slack.stop()
    grafana.stop()
    parent, waiting, refused, verdict = slack.messages
    assert {"type": "mrkdwn", "text": "*On-call*\n@alice"} in parent.blocks[1]["fields"]
    assert [m.thread_ts for m in (waiting, refused)] == [parent.ts, parent.ts]
    assert waiting.text.startswith(":hourglass: waiting up to")
    assert refused.text == ":no_entry: on-call confirmation: nobody confirmed on call"
    assert verdict.thread_ts == parent.ts
    assert verdict.text == ":no_entry: *aborted*: nobody confirmed on call; nothing was started"
    [update] = slack.updates
    assert update.ts == parent.ts
    assert update.blocks[0]["text"]["text"] == verdict.text
    region, point = grafana.annotations
    ended = "v2 aborted: nobody confirmed on call; nothing was started"
    assert (region["text"], point["text"]) == (ended, ended)
    assert region["timeEnd"] >= point["time"] > region["time"]
    assert "environment:gate-prod" in region["tags"]

    found = wait_for(lambda: deploy_events("gate-prod"), timeout=30, interval=0.5, what="events")
    assert [e.event for e in found] == ["deployflow.deploy.started", "deployflow.deploy.aborted"]
    aborted = found[-1]
    assert aborted.resource.id == f"deployflow.deployment.{row_id}"
    roles = {
        r.role: r.id for r in aborted.related if r.role in ("service", "version", "environment")
    }
    assert roles == {
        "service": "deployflow.service.shop",
        "version": "deployflow.version.shop.v2",
        "environment": "deployflow.environment.gate-prod",
    }
    assert aborted.payload["message"] == "nobody confirmed on call; nothing was started"


def test_approve_refuses_what_is_not_a_run_id(capsys):
    assert main(["approve", "not-a-uuid"]) == 2
    assert "RUN_ID: 'not-a-uuid' is not a flow run id" in capsys.readouterr().err


def ledger_rows(ledger: Ledger) -> list[tuple[int, str]]:
    with ledger._sessions() as s:
        return [(row.id, row.status) for row in repository.history(s)]


def test_approve_needs_the_server_the_deploy_runs_on(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["approve", "0b5c0bd4-2f06-4b2e-9a59-0e1a9d0b8a11"]) == 2
    assert "PREFECT_API_URL: set it to the Prefect server" in capsys.readouterr().err


@flow(name="deploy-under-test-with-its-run")
def deploy_with_its_run(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> State:
    from prefect.runtime import flow_run

    # Its row names its run, as the deploy flow's does: a person's rollback answers its form.
    request = dataclasses.replace(request, flow_run_id=str(flow_run.get_id()))
    return finish(release(spec, backends, request), backends)


@flow(name="rollback-while-the-deploy-waits")
def roll_back(spec: ServiceSpec, backends: Backends, request: RollbackRequest) -> RollbackResult:
    return finish_rollback(roll_back_now(spec, backends, request), spec, backends)


def test_a_persons_rollback_while_the_deploy_waits_for_on_call_ends_it_before_traffic(
    prefect_server, tmp_path: Path
):
    service = FakeService()
    service.run_stable("v1")
    database = f"sqlite:///{tmp_path / 'tracking.db'}"
    spec = make_spec(
        tmp_path,
        notifications={
            "on_call": {"kind": "static", "names": ["@alice"], "confirm": {"undo-gate": True},
                        "confirm_timeout": "1h"},
        },
    )  # fmt: skip

    def backends() -> Backends:
        return Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            ledger=Ledger.for_url(database),
            on_call=StaticOnCall(["@alice"]),
            http_transport=service.transport,
        )

    asked: dict[str, RollbackResult] = {}

    def roll_back_once_paused() -> None:
        wait_for(
            lambda: paused_run_id("deploy-under-test-with-its-run"),
            timeout=60,
            interval=0.2,
            what="a deploy waiting for on-call",
        )
        request = RollbackRequest("undo-gate", None, "bad config", "bob", wait_seconds=60)
        asked["result"] = roll_back(spec, backends(), request)

    thread = threading.Thread(target=roll_back_once_paused, daemon=True)
    thread.start()
    state = deploy_with_its_run(
        spec, backends(), ReleaseRequest("v2", "undo-gate"), return_state=True
    )
    thread.join(timeout=60)

    assert state.name == "Failed"
    assert state.message == (
        "v2 aborted: rollback asked by bob: bad config (while the deploy waited for its on-call "
        "confirmation); nothing was started"
    )
    assert service.router.changes == []
    assert {i.version for i in service.target.instances()} == {"v1"}
    result = asked["result"]
    assert result.ok, result.outcome.message
    assert result.outcome.message == (
        "the deploy of v2 in progress was asked to roll back and stopped before moving any "
        "traffic; v1 serves all the traffic"
    )
