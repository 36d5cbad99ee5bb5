"""The story each branch of the deploy flow tells, as the list of events a recording listener
heard: what people, dashboards and automations are told, once, in order."""

from __future__ import annotations

import itertools

import pytest
from prefect import Task, flow

import flows.deploy
import flows.deploy_steps
import flows.rollback
import flows.rollout
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.fakes.story import RecordingListener
from deployflow.release import ReleaseOutcome
from deployflow.spec import ServiceSpec
from deployflow.story import (
    Ended,
    Recorder,
    RollbackVerified,
    RolledBack,
    StageBegan,
    StageEnded,
    Started,
)
from deployflow.tracking.ledger import Ledger
from flows.deploy import ReleaseRequest, finish, release
from tests.integration.flows.helpers import make_spec

pytestmark = pytest.mark.integration

_environments = itertools.count()


@flow(name="told-story-under-test")
def run(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> ReleaseOutcome:
    outcome = release(spec, backends, request)
    finish(outcome, backends)
    return outcome


@pytest.fixture(autouse=True)
def no_retry_pauses(monkeypatch):
    for module in (flows.deploy, flows.deploy_steps, flows.rollout, flows.rollback):
        for value in vars(module).values():
            if isinstance(value, Task) and value.retries:
                monkeypatch.setattr(value, "retry_delay_seconds", 0)


@pytest.fixture
def told(prefect_server, tmp_path):
    """Deploy a version of a fake service with a recording listener as the only audience."""
    service = FakeService()
    service.run_stable("v1")
    heard = RecordingListener()
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")

    def deploy(version: str, spec: ServiceSpec | None = None, **request: object):
        backends = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            ledger=ledger,
            http_transport=service.transport,
            story=Recorder([heard]),
        )
        req = ReleaseRequest(version, f"told{next(_environments)}", **request)  # type: ignore[arg-type]
        return run(spec or make_spec(tmp_path), backends, req), heard

    deploy.service = service  # type: ignore[attr-defined]
    return deploy


STAGES = ["StageBegan", "StageEnded"]


def test_a_release_tells_its_start_plan_each_stage_and_its_end(told):
    outcome, heard = told("v2")
    assert outcome.status == "succeeded"
    assert heard.told == ["Started", "Announced", *STAGES * 4, "Ended"]
    [started] = heard.of(Started)
    assert (started.deploy.version, started.deploy.previous_version) == ("v2", "v1")
    assert [e.stage.weight for e in heard.of(StageEnded)] == [5, 25, 50, 100]
    # Every event after the start is about the same deploy.
    assert {d for _, d in heard.heard[1:]} == {started.deploy}


def test_a_blue_green_release_tells_each_stage_s_beginning_and_end(told, tmp_path):
    blue_green = {"kind": "blue-green", "observe": "10ms", "keep_previous": "10ms",
                  "probe_requests": 3}  # fmt: skip
    outcome, heard = told("v2", make_spec(tmp_path, strategy=blue_green))
    assert outcome.status == "succeeded", outcome.message
    assert heard.told == ["Started", "Announced", *STAGES * 2, "Ended"]
    began = heard.of(StageBegan)
    assert [(e.index, e.weight, e.label) for e in began] == [
        (0, 0, "v2 in isolation"),
        (1, 100, "100% v2, v1 kept warm"),
    ]
    ended = [e.stage for e in heard.of(StageEnded)]
    assert [e.at <= s.finished_at for e, s in zip(began, ended, strict=True)] == [True, True]


def test_a_rollback_tells_the_stage_that_failed_and_the_trigger_with_its_figures(told):
    told.service.behave("v2", error_rate=0.2)
    outcome, heard = told("v2")
    assert outcome.status == "rolled_back"
    assert heard.told == [
        "Started", "Announced", *STAGES, "RolledBack", "RollbackVerified", "Ended"
    ]  # fmt: skip
    [rolled] = heard.of(RolledBack)
    assert (rolled.restored_to, rolled.error) == ("v1", None)
    assert heard.of(RollbackVerified) == [RollbackVerified("v1", ok=True)]
    assert rolled.trigger.headline.startswith("error rate 20.0% over 600 requests, above the 5%")
    assert len(rolled.trigger.headline.split()) <= 20
    [ended] = heard.of(Ended)
    assert ended.outcome.message == f"rolled back to v1: {rolled.trigger.headline}"


def test_a_blocked_deploy_tells_only_its_start_and_end(told, tmp_path):
    spec = make_spec(
        tmp_path, pre_checks={"checkout": str(tmp_path), "build": {"command": ["false"]}}
    )
    outcome, heard = told("v2", spec)
    assert outcome.status == "aborted"
    assert heard.told == ["Started", "Ended"]


def test_a_dry_run_tells_its_plan_and_moves_nothing(told):
    outcome, heard = told("v2", dry_run=True)
    assert outcome.status == "succeeded"
    assert heard.told == ["Started", "Announced", "Ended"]


def test_a_canary_that_does_not_start_tells_no_stage(told):
    told.service.target.fail_start.add("v2")
    outcome, heard = told("v2")
    assert outcome.status == "failed"
    assert heard.told == ["Started", "Announced", "Ended"]


def test_a_listener_that_raises_tells_the_others_and_changes_nothing(told, tmp_path):
    class Broken:
        def describe(self) -> str:
            return "broken"

        def hear(self, event, deploy) -> None:
            raise RuntimeError("down")

    told.service.behave("v2", error_rate=0.2)
    service = told.service
    heard = RecordingListener()
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'broken.db'}"),
        http_transport=service.transport,
        story=Recorder([Broken(), heard]),
    )
    outcome = run(make_spec(tmp_path), backends, ReleaseRequest("v2", "told-broken"))
    assert outcome.status == "rolled_back"  # the rollback went on
    assert heard.told[-3:] == ["RolledBack", "RollbackVerified", "Ended"]
