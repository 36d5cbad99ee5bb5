"""A rollback is told the moment traffic is back on the stable version (issue 26): the deploy run's
state says RolledBack, Prefect's ``deployflow.deploy.rolled-back`` event is sent and the Slack
thread has its reply *before* the rollback stops the canary, reads its log, checks the stable
version and gathers the evidence, which follow in the same run. Asserted on the order things
happened in one deploy on in-memory backends, with the real audiences on the session's Prefect
server and a local Slack API."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest
from prefect import State, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.runtime import flow_run
from pydantic import SecretStr

import tasks.audiences
from deployflow.backends import Backends
from deployflow.events import DeployEvent
from deployflow.fakes.backends import FakeService
from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.story import Deploy, Recorder, StoryEvent
from deployflow.tracking.ledger import Ledger
from flows.deploy import ReleaseRequest, finish, release
from tasks.audiences import prefect_audiences
from tests.integration.flows.helpers import make_spec

pytestmark = pytest.mark.integration


class Timeline:
    """What happened, in order: story events heard, Prefect events sent, Slack messages seen,
    and the rollback's steps after the restore (the canary's log read, the canary stopped)."""

    def __init__(self, slack: FakeSlackAPI) -> None:
        self.slack = slack
        self.entries: list[str] = []

    def describe(self) -> str:
        return "timeline"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        self.entries.append(f"told {type(event).__name__}")

    def step(self, name: str) -> None:
        self.entries.append(f"step {name}")
        # What the thread held by then.
        self.entries.append(f"slack {len(self.slack.messages)}")

    def index(self, entry: str) -> int:
        return self.entries.index(entry)


@flow(name="rollback-told-at-once-under-test")
def deploy_on_fakes(backends: Backends, spec_dir: str) -> State[Any]:
    from pathlib import Path

    run_id = flow_run.get_id()
    request = ReleaseRequest("v2", "told-at-once", flow_run_id=str(run_id))
    spec = make_spec(Path(spec_dir))
    return finish(release(spec, backends, request), backends)


def test_the_rollback_is_told_before_its_evidence_is_gathered(
    prefect_server, tmp_path, monkeypatch
):
    service = FakeService()
    service.run_stable("v1")
    service.behave("v2", error_rate=0.2)
    sent: list[str] = []
    real_send = tasks.audiences.send_events

    with FakeSlackAPI(token="xoxb-once", channels=["deploys"]) as slack:
        timeline = Timeline(slack)

        def send_and_note(*events: DeployEvent) -> None:
            timeline.entries.extend(f"event {e.event}" for e in events)
            sent.extend(e.event for e in events)
            real_send(*events)

        monkeypatch.setattr(tasks.audiences, "send_events", send_and_note)
        stop, logs = service.target.stop, service.target.logs

        def noted_logs(version: str, lines: int = 40) -> str:
            if version == "v2":
                timeline.step("canary log read")
            return logs(version, lines=lines)

        def noted_stop(version: str) -> None:
            timeline.step(f"stop {version}")
            stop(version)

        monkeypatch.setattr(service.target, "logs", noted_logs)
        monkeypatch.setattr(service.target, "stop", noted_stop)
        notifier = SlackNotifier(SecretStr("xoxb-once"), "#deploys", base_url=slack.base_url)
        plain = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            notifiers=(notifier,),
            ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
            http_transport=service.transport,
        )
        # As connect_backends builds them: the Prefect audiences first, then the plain ones.
        backends = plain.model_copy(
            update={"story": Recorder([*prefect_audiences(), *plain.story.listeners, timeline])}
        )
        state = deploy_on_fakes(backends, str(tmp_path), return_state=True)
        messages = [m.text or "" for m in slack.messages]

    assert state.is_failed()  # a rolled-back deploy ends Failed, tagged with its outcome
    entries = timeline.entries
    told = entries.index("told RolledBack")
    # The Prefect event and the thread reply came with the restore, before any evidence step.
    event = entries.index("event deployflow.deploy.rolled-back")
    # The stages read the canary's log too: the rollback's steps are those after the last stage.
    last_stage = len(entries) - 1 - entries[::-1].index("told StageEnded")
    first_step = next(i for i, e in enumerate(entries) if i > last_stage and e.startswith("step "))
    assert entries[first_step] == "step canary log read", entries
    assert last_stage < event < told < first_step < entries.index("step stop v2"), entries
    replies_by_then = int(entries[first_step + 1].removeprefix("slack "))
    rollback_reply = next(i for i, m in enumerate(messages) if m.startswith(":rewind:"))
    assert rollback_reply < replies_by_then, (messages, entries)
    assert messages[rollback_reply].startswith(":rewind: shop v2 rolled back to v1: error rate")
    # The check of v1 is told after the evidence steps, then the ending; the rollback's event
    # was the deploy's ending (an automation on rollbacks runs once).
    assert first_step < entries.index("told RollbackVerified") < entries.index("told Ended")
    assert sent.count("deployflow.deploy.rolled-back") == 1, sent
    assert any(m.startswith(":white_check_mark: v1 verified healthy after the") for m in messages)

    # In Prefect: the run's state said RolledBack before the rollback subflow stopped the
    # canary, and the run ended tagged with its outcome once.
    run_id = UUID(str(state.state_details.flow_run_id))
    with get_client(sync_client=True) as client:
        run: FlowRun = client.read_flow_run(run_id)
        states = sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            )
        )
        [rollback_run] = [r for r in subflows if r.name.startswith("rollback")]
        stops = [
            t
            for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [rollback_run.id]})  # type: ignore[arg-type]
            )
            if t.name.startswith("stop-canary")
        ]
    names = [s.name for s in states]
    assert "RolledBack" in names, names
    rolled = states[names.index("RolledBack")]
    assert rolled.type.value == "RUNNING"
    assert (rolled.message or "").startswith("rolled back to v1: error rate")
    assert names[-1] == "Failed"
    [stopped] = stops
    assert stopped.start_time is not None
    assert rolled.timestamp < stopped.start_time
    assert [t for t in run.tags if t.startswith("outcome:")] == ["outcome:rolled-back"]
    # Prefect counts the RolledBack state as entering Running again (docs/prefect-ui.md says so).
    assert run.run_count == 2
