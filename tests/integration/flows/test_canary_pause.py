"""A canary's ``pause`` step on the real Prefect server, with in-memory backends: the rollout
waits with a form, on the deploy run (which shows Paused), that shows the stage figures so far;
``deployflow approve`` (given the deploy's run) lets it go on; nobody approving rolls it back.
Meanwhile each stage is told in the deploy's Slack thread the moment it ends, and the rollback
notice is a reply in that thread."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from datetime import datetime
from pathlib import Path
from uuid import UUID

import pytest
from prefect import State, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from pydantic import SecretStr

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeAlerts, FakeService
from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.polling import wait_for
from deployflow.providers.base import AlertsRead, FiringAlert
from deployflow.release import ReleaseOutcome
from deployflow.signals import AlertWatch
from deployflow.spec import ServiceSpec
from deployflow.story import Announced, Deploy, Started
from deployflow.tracking.ledger import Ledger
from deployments.cli import main
from flows.deploy import ReleaseRequest, finish, release
from flows.deploy_steps import interrupted
from flows.manual_rollback import RollbackRequest, RollbackResult, finish_rollback, roll_back_now
from tasks.audiences import prefect_audiences
from tests.integration.flows.helpers import make_spec

pytestmark = pytest.mark.integration


@flow(name="paused-deploy-under-test")
def deploy_and_finish(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> State:
    from prefect.runtime import flow_run

    # Its row names its run, as the deploy flow's does: a person's rollback answers its form.
    request = dataclasses.replace(request, flow_run_id=str(flow_run.get_id()))
    return finish(
        release(spec, backends, request),
        backends,
        spec_dashboard=spec.notifications.dashboard_url,
    )


def runs(flow_name: str, state: StateType) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state]))
            ),
        )


def form_text(run: FlowRun) -> str:
    assert run.state is not None
    keyset = run.state.state_details.run_input_keyset
    assert keyset is not None
    with get_client(sync_client=True) as client:
        return json.loads(client.read_flow_run_input(run.id, keyset["description"]))


def gate_rows(state: State) -> list[dict]:
    """The rows of the deploy run's ``deploy-gates`` table artifact: who answered what, when."""
    with get_client(sync_client=True) as client:
        [gates] = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                key=ArtifactFilterKey(any_=["deploy-gates"]),
            )
        )
    return json.loads(str(gates.data))


@pytest.fixture
def slack():
    with FakeSlackAPI(token="xoxb-pause", channels=["deploys"]) as api:
        yield api


def start(tmp_path: Path, slack: FakeSlackAPI, environment: str, pause: str):
    service = FakeService()
    service.run_stable("v1")
    spec = make_spec(
        tmp_path,
        strategy={"kind": "canary", "steps": [25, {"pause": {"timeout": pause}}, 100],
                  "observe": "10ms"},
        notifications={"dashboard_url": "http://grafana.test/d/shop?orgId=1"},
    )  # fmt: skip
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(SlackNotifier(SecretStr("xoxb-pause"), "#deploys", base_url=slack.base_url),),
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
        http_transport=service.transport,
    ).telling(prefect_audiences())
    return service, spec, backends, ReleaseRequest("v2", environment)


def test_approve_given_the_deploy_run_lets_the_canary_go_on(prefect_server, tmp_path, slack):
    # Long enough for a loaded machine; the paused run looks for the answer every 4 s.
    service, spec, backends, request = start(tmp_path, slack, "pause-ok", "40s")
    seen: dict[str, object] = {}

    def approver() -> None:
        # The deploy run itself shows Paused, with the form (the rollout subflow waits on it).
        [deploy_run] = wait_for(
            lambda: runs("paused-deploy-under-test", StateType.PAUSED) or None,
            timeout=120,
            interval=0.2,
            what="a paused deploy run",
        )
        seen["form"] = form_text(deploy_run)
        seen["rollouts paused"] = len(runs("progressive-rollout", StateType.PAUSED))
        # Told live: stage 1's reply is in the thread while the rollout still waits.
        seen["thread"] = [m.text for m in slack.messages[1:]]
        seen["weight"] = service.router.state().canary_weight
        seen["code"] = main(["approve", str(deploy_run.id), "--as", "Alice Example"])

    thread = threading.Thread(target=approver, daemon=True)
    thread.start()
    state = deploy_and_finish(spec, backends, request, return_state=True)
    thread.join(timeout=120)

    assert state.is_completed(), state.message
    assert seen["code"] == 0
    assert seen["rollouts paused"] == 0
    # Who approved which stage, when: a table artifact of the deploy run.
    [row] = gate_rows(state)
    assert (row["gate"], row["answer"], row["by"]) == (
        "stage 1 (25%) to 100%",
        "approved",
        "Alice Example",
    )
    assert datetime.fromisoformat(row["at"]).tzinfo is not None
    assert "Canary v2 paused after stage 1 (25% of traffic)." in str(seen["form"])
    assert "- Stage 1 · 25% canary · promoted · errors" in str(seen["form"])
    assert seen["weight"] == 25  # traffic held where it was during the pause
    line, waiting = seen["thread"]  # type: ignore[misc]
    assert line.startswith("Stage 1 · 25% canary · promoted")
    assert waiting.startswith(":hourglass: waiting up to 40 s: approve 100% on v2?")
    parent, *replies = slack.messages
    assert [r.thread_ts for r in replies] == [parent.ts] * 5
    assert (
        replies[2].text
        == ":white_check_mark: approval of stage 2 (100%): answered by Alice Example"
    )
    assert replies[3].text.startswith("Stage 2 · 100% canary · promoted")
    assert replies[4].text.startswith(":white_check_mark: *succeeded*")
    # The dashboard link runs from the deploy's start to now in the parent, to its end at the end.
    started = re.search(r"from=(\d+)&to=now\|Dashboard>", json.dumps(parent.blocks))
    ended = re.search(r"orgId=1&from=(\d+)&to=(\d+)\|Dashboard of the deploy>", replies[4].text)
    assert started is not None, parent.blocks
    assert ended is not None, replies[4].text
    assert started.group(1) == ended.group(1) < ended.group(2)
    service_state = service.router.state()
    assert service_state.canary_weight == 0
    assert {i.version for i in service.target.instances()} == {"v2"}


def test_nobody_approving_rolls_back_and_says_so_in_the_thread(prefect_server, tmp_path, slack):
    service, spec, backends, request = start(tmp_path, slack, "pause-timeout", "2s")

    state = deploy_and_finish(spec, backends, request, return_state=True)

    assert state.name == "Failed", state.message
    why = "nobody approved going from 25% to 100% within 2 s (after stage 1)"
    assert state.message == f"v2 rolled_back: rolled back to v1: {why}"
    data = state.result(raise_on_failure=False).outcome  # ReleaseNotSucceeded
    assert (data["rollback"]["metric"], data["rollback"]["stage"]) == ("manual gate", 0)
    # Traffic went back to v1 and v2 never got more than the stage before the pause.
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert service.router.state().canary_weight == 0
    assert {i.version for i in service.target.instances()} == {"v1"}
    # Every notice is a reply in the deploy's thread; the parent was rewritten with the outcome.
    parent, *replies = slack.messages
    assert [r.thread_ts for r in replies] == [parent.ts] * len(replies)
    texts = [r.text for r in replies]
    assert texts[0].startswith("Stage 1 · 25% canary · promoted")
    assert texts[1].startswith(":hourglass: waiting up to 2 s")
    assert texts[2] == f":no_entry: approval of stage 2 (100%): {why}"
    assert texts[3].startswith(":rewind: shop v2 rolled back to v1: " + why)
    # The rollback is told when traffic is back; the check of v1 follows, then the outcome.
    assert texts[4] == ":white_check_mark: v1 verified healthy after the rollback"
    assert texts[5].startswith(":rewind: *rolled back*")
    assert [u.ts for u in slack.updates] == [parent.ts, parent.ts]
    # The tracking database says what the gate decided, not what the figures alone said.
    (stage,) = backends.ledger.deployment(data["deployment_id"])["stages"]
    assert (stage["verdict"], stage["reason"]) == ("rollback", why)


def test_a_canary_that_fails_while_paused_is_rolled_back_without_waiting(
    prefect_server, tmp_path, slack
):
    # Nobody answers: without the watch the rollout would wait the whole minute.
    service, spec, backends, request = start(tmp_path, slack, "pause-watch", "60s")

    def fail_once_paused() -> None:
        wait_for(
            lambda: runs("paused-deploy-under-test", StateType.PAUSED) or None,
            timeout=120,
            interval=0.2,
            what="a deploy paused by its rollout",
        )
        service.behave("v2", error_rate=0.3)

    thread = threading.Thread(target=fail_once_paused, daemon=True)
    thread.start()
    started = time.monotonic()
    state = deploy_and_finish(spec, backends, request, return_state=True)
    took = time.monotonic() - started
    thread.join(timeout=10)

    assert state.name == "Failed", state.message
    assert took < 60, "the rollout waited for the pause's timeout"
    data = state.result(raise_on_failure=False).outcome  # ReleaseNotSucceeded
    assert (data["rollback"]["metric"], data["rollback"]["stage"]) == ("error_rate", 0)
    assert data["rollback"]["reason"].startswith("while paused for approval after stage 1: ")
    # Traffic never went past the stage before the pause, and is back on v1.
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert service.router.state().canary_weight == 0
    assert {i.version for i in service.target.instances()} == {"v1"}
    (stage,) = backends.ledger.deployment(data["deployment_id"])["stages"]
    assert stage["verdict"] == "rollback"
    assert stage["reason"] == data["rollback"]["reason"]


def test_an_alert_that_fires_while_paused_rolls_the_canary_back(prefect_server, tmp_path, slack):
    # The metrics stay healthy; the spec's alerts section is what sees the trouble.
    service, spec, backends, request = start(tmp_path, slack, "pause-alert", "30s")
    alerts = FakeAlerts(AlertsRead())
    backends = backends.model_copy(update={"alerts": AlertWatch(alerts)})

    def fire_once_paused() -> None:
        wait_for(
            lambda: runs("paused-deploy-under-test", StateType.PAUSED) or None,
            timeout=120,
            interval=0.2,
            what="a deploy paused by its rollout",
        )
        labels = (("alertname", "ShopCheckoutDown"), ("service", "shop"))
        alerts.read = AlertsRead((FiringAlert("ShopCheckoutDown", labels),))

    thread = threading.Thread(target=fire_once_paused, daemon=True)
    thread.start()
    state = deploy_and_finish(spec, backends, request, return_state=True)
    thread.join(timeout=10)

    assert state.name == "Failed", state.message
    data = state.result(raise_on_failure=False).outcome  # ReleaseNotSucceeded
    assert (data["rollback"]["metric"], data["rollback"]["stage"]) == ("alerts", 0)
    assert data["rollback"]["reason"] == (
        "while paused for approval after stage 1: alert(s) firing: ShopCheckoutDown"
    )
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert {i.version for i in service.target.instances()} == {"v1"}


def test_approve_refuses_a_run_that_waits_for_nothing(prefect_server, capsys):
    @flow(name="not-paused")
    def quick() -> UUID:
        from prefect.runtime import flow_run

        return UUID(str(flow_run.get_id()))

    run_id = quick()
    assert main(["approve", str(run_id)]) == 1
    assert "is not waiting for an on-call confirmation or a stage approval" in (
        capsys.readouterr().err
    )


@flow(name="interrupted-under-test")
def interrupted_after_the_announcement(backends: Backends, service: FakeService) -> ReleaseOutcome:
    """What the deploy flow does when a signal arrives mid-stage, after its thread was started:
    ``interrupted`` (called from ``steps``' handler) with v2 taking 25% of the traffic."""
    stable = service.target.instances()[0]
    canary = service.target.start("v2")
    service.router.set_split(stable, canary, 25)
    outcome = ReleaseOutcome(service="shop", environment="interrupted-prod", version="v2")
    outcome.deployment_id = backends.ledger.start(outcome)
    backends.story.record(Started(Deploy.of(outcome)))
    backends.story.record(Announced("canary", (25, 100), "pinned"))
    interrupted(backends, outcome, stable, "v2", KeyboardInterrupt())
    return outcome


def test_an_interrupted_run_ends_its_thread_and_sends_its_ending_event(
    prefect_server, tmp_path, slack
):
    service, _, backends, _ = start(tmp_path, slack, "interrupted-prod", "5m")

    interrupted_after_the_announcement(backends, service)

    assert service.router.state().canary_weight == 0
    # No pointer to an incident report: an interrupted run writes none (only a rollback does).
    ending = ":x: *failed*: interrupted (SIGINT): all traffic back on v1, stopped v2"
    parent, reply = slack.messages
    assert (reply.thread_ts, reply.text) == (parent.ts, ending)
    [update] = slack.updates
    assert update.ts == parent.ts
    assert update.blocks[0]["text"]["text"] == ending

    def ended() -> list[str] | None:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(prefix=["deployflow.deploy."]),
                    # The environment is this test's alone (row ids repeat across ledgers).
                    related=EventRelatedFilter(id=["deployflow.environment.interrupted-prod"]),
                ),
                limit=50,
            )
        # The deploy's start was told too; the ending is the one event after it.
        told = sorted(e.event for e in page.events)
        return told if "deployflow.deploy.failed" in told else None

    assert wait_for(ended, timeout=60, interval=0.5, what="the ending event") == [
        "deployflow.deploy.failed",
        "deployflow.deploy.started",
    ]


def test_a_tracking_database_that_stops_taking_writes_while_paused_rolls_the_canary_back(
    prefect_server, tmp_path, slack, monkeypatch
):
    """The SQLite tracking database on a real filesystem that fills while the rollout waits for
    approval (nobody answers; a 60 s pause): the lease cannot be renewed, so after one renewal
    period of silence (2.5 s with a 15 s lease) the watch puts traffic back on v1, and the
    rollout, resumed (Prefect's pause looks for an answer every few seconds) while the lease
    still holds, stops v2 and ends rolled back with the reason in words."""
    from tests.full_disk import fill, tmpfs

    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "15")
    service, spec, backends, request = start(tmp_path, slack, "pause-tracking", "60s")
    with tmpfs(tmp_path / "tracking", size_kib=4096) as disk:
        backends = backends.model_copy(
            update={"ledger": Ledger.for_url(f"sqlite:///{disk / 'tracking.db'}")}
        )

        def fill_once_paused() -> None:
            wait_for(
                lambda: runs("paused-deploy-under-test", StateType.PAUSED) or None,
                timeout=120,
                interval=0.2,
                what="a deploy paused by its rollout",
            )
            fill(disk)

        thread = threading.Thread(target=fill_once_paused, daemon=True)
        thread.start()
        started = time.monotonic()
        state = deploy_and_finish(spec, backends, request, return_state=True)
        took = time.monotonic() - started
        thread.join(timeout=10)
        backends.ledger.engine.dispose()

    assert took < 60, "the rollout waited for the pause's timeout"
    data = state.result(raise_on_failure=False).outcome  # ReleaseNotSucceeded
    assert data["status"] == "rolled_back", data["message"]
    assert data["rollback"]["metric"] == "tracking_database"
    assert "the tracking database stopped answering" in data["rollback"]["reason"]
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert service.router.state().canary_weight == 0
    assert {i.version for i in service.target.instances()} == {"v1"}
    # The disk stayed full: the run says its outcome is not recorded, the next deploy settles it.
    assert "could not be recorded in the tracking database" in data["message"]


@flow(name="manual-rollback-of-a-paused-deploy")
def manual_rollback(spec: ServiceSpec, backends: Backends, request: RollbackRequest) -> object:
    return finish_rollback(roll_back_now(spec, backends, request), spec, backends)


def test_a_persons_rollback_answers_the_pause_and_the_canary_rolls_back_at_once(
    prefect_server, tmp_path, slack
):
    # Nobody approves within the hour: without an answer the canary would keep its 25% that long.
    service, spec, backends, request = start(tmp_path, slack, "pause-undo", "1h")
    asked: dict[str, object] = {}

    def roll_back_once_paused() -> None:
        wait_for(
            lambda: runs("paused-deploy-under-test", StateType.PAUSED) or None,
            timeout=120,
            interval=0.2,
            what="a deploy paused by its rollout",
        )
        asked["weight"] = service.router.state().canary_weight
        others = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
            http_transport=service.transport,
        )
        why = RollbackRequest("pause-undo", None, "v2 breaks search", "alice", wait_seconds=60)
        asked["result"] = manual_rollback(spec, others, why)

    thread = threading.Thread(target=roll_back_once_paused, daemon=True)
    thread.start()
    started = time.monotonic()
    state = deploy_and_finish(spec, backends, request, return_state=True)
    took = time.monotonic() - started
    thread.join(timeout=120)

    assert asked["weight"] == 25
    assert state.name == "Failed", state.message
    assert took < 120, "the rollout waited for the pause's timeout"
    data = state.result(raise_on_failure=False).outcome  # ReleaseNotSucceeded
    # Named as the person's rollback with their reason, not as a refused stage or a dead canary.
    assert (data["rollback"]["metric"], data["rollback"]["stage"]) == ("manual", 0)
    assert data["rollback"]["reason"] == (
        "rollback asked by alice: v2 breaks search (while paused for approval after stage 1)"
    )
    # The run's one line (a headline of at most 13 words) keeps who asked and why.
    assert (state.message or "").startswith(
        "v2 rolled_back: rolled back to v1: rollback asked by alice: v2 breaks search"
    )
    assert max(c.canary_weight for c in service.router.changes) == 25
    assert service.router.state().canary_weight == 0
    assert {i.version for i in service.target.instances()} == {"v1"}
    # The person's rollback was the deploy's own: no second rollback, nothing refused.
    result = asked["result"]
    assert isinstance(result, RollbackResult), result
    assert result.ok, result.outcome.message
    assert result.outcome.deployment_id is None
    assert "was asked to roll back and did; v1 serves all the traffic" in result.outcome.message
    # Who answered the gate, in the deploy's gates table: the requester, through the rollback.
    [row] = gate_rows(state)
    assert (row["answer"], row["by"]) == ("not approved", "alice (deployflow rollback)")
