"""The events a deploy sends: names, the deploy as resource, service/version/environment related."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployflow import events
from deployflow.analysis import Verdict
from deployflow.release import ReleaseOutcome, RollbackRecord, Trigger
from deployflow.rollout import StageResult
from deployflow.story import Deploy, RolledBack

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def outcome(**changes: object) -> ReleaseOutcome:
    o = ReleaseOutcome(service="payments", environment="production", version="2.4.0")
    o.deployment_id = 17
    o.previous_version = "2.3.9"
    for name, value in changes.items():
        setattr(o, name, value)
    return o


def stage(index: int, weight: int, verdict: Verdict) -> StageResult:
    return StageResult(index, weight, verdict, [], None, NOW, NOW)


def test_started_names_the_deploy_and_relates_service_version_environment() -> None:
    event = events.started(outcome())
    assert event.event == "deployflow.deploy.started"
    assert event.resource == {
        "prefect.resource.id": "deployflow.deployment.17",
        "prefect.resource.name": "payments 2.4.0 to production",
    }
    assert {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event.related} == {
        "service": "deployflow.service.payments",
        "version": "deployflow.version.payments.2.4.0",
        "environment": "deployflow.environment.production",
    }
    assert event.payload["previous_version"] == "2.3.9"


def test_events_relate_the_deploy_run_so_alike_tracking_ids_are_told_apart() -> None:
    # Two tracking databases under one Prefect server both have a row 17.
    run = "7d1f5a0e-0000-4000-8000-000000000017"
    event = events.started(outcome(flow_run_id=run))
    roles = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in event.related}
    assert roles["deploy-run"] == f"prefect.flow-run.{run}"
    assert "deploy-run" not in {
        r["prefect.resource.role"] for r in events.started(outcome()).related
    }


def test_only_promoted_stages_are_announced_in_order() -> None:
    stages = [
        stage(0, 5, Verdict.PROMOTE),
        stage(1, 25, Verdict.PROMOTE),
        stage(2, 50, Verdict.ROLLBACK),
    ]
    sent = events.stages_promoted(outcome(stages=stages))
    assert [e.event for e in sent] == ["deployflow.deploy.stage.promoted"] * 2
    assert [(e.payload["stage"], e.payload["weight"]) for e in sent] == [(0, 5), (1, 25)]


@pytest.mark.parametrize(
    ("status", "name"),
    [
        ("succeeded", "deployflow.deploy.succeeded"),
        ("rolled_back", "deployflow.deploy.rolled-back"),
        ("aborted", "deployflow.deploy.aborted"),
        ("failed", "deployflow.deploy.failed"),
    ],
)
def test_the_ending_is_named_for_the_status(status: str, name: str) -> None:
    event = events.ended(outcome(status=status, message="why"))
    assert event.event == name
    assert event.payload["status"] == status
    assert event.payload["message"] == "why"


def test_a_rollback_event_carries_its_trigger() -> None:
    trigger = Trigger(2, 50, "error_rate", 0.2, 0.05, "error rate 20% > 5%")
    event = events.ended(outcome(status="rolled_back", rollback=RollbackRecord(trigger)))
    assert event.payload["trigger"]["metric"] == "error_rate"
    assert event.payload["trigger"]["weight"] == 50


def test_the_rollback_sent_when_traffic_is_back_reads_as_the_ending_would() -> None:
    # Sent before the evidence is gathered, it stands for the ending: an automation on rollbacks
    # sees the same name, resource, relations and reason as from the outcome at the end.
    trigger = Trigger(2, 50, "error_rate", 0.2, 0.05, "error rate 20% > 5%")
    rolled = outcome(status="rolled_back", rollback=RollbackRecord(trigger), strategy="canary")
    rolled.message = f"rolled back to 2.3.9: {trigger.headline}"
    early = events.rolled_back(Deploy.of(rolled), RolledBack(trigger, "2.3.9"), "canary")
    late = events.ended(rolled)
    assert (early.event, early.resource, early.related) == (late.event, late.resource, late.related)
    assert early.payload == late.payload
