"""The story's chat and dashboard audiences against local Slack and Grafana APIs: the announcement
is the thread's parent, each stage a reply, and a Grafana point at the time each stage ended; an
audience that fails blocks nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from prefect import flow
from pydantic import SecretStr

from deployflow.analysis import Measurement, MetricSample, Outcome, Verdict
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.fakes.grafana_api import FakeGrafanaAPI
from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.providers.grafana import GrafanaAnnotator
from deployflow.release import ReleaseOutcome, Trigger
from deployflow.rollout import StageResult
from deployflow.story import Announced, Deploy, RolledBack, StageEnded, Started
from deployflow.tracking.ledger import Ledger

pytestmark = pytest.mark.integration

PLAN = Announced("canary", (5, 25, 100), "pinned by the spec", on_call="@alice")


def stage(index: int, weight: int, ended: datetime) -> StageResult:
    m = Measurement(Outcome.SUCCESSFUL, MetricSample(0.001, 0.02, 342.2), 0.02)
    return StageResult(index, weight, Verdict.PROMOTE, [m], None, ended, ended)


@flow(name="deploy-story-under-test")
def tell(backends: Backends, outcome: ReleaseOutcome) -> None:
    backends.story.record(Started(Deploy.of(outcome)))
    backends.story.record(PLAN)
    for stage in outcome.stages:
        backends.story.record(StageEnded(stage))


def test_stages_are_replies_in_the_thread_and_points_when_they_ended(
    prefect_server, tmp_path: Path
):
    service = FakeService()
    first = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    second = datetime(2026, 11, 28, 9, 10, tzinfo=UTC)
    outcome = ReleaseOutcome(service="shop", environment="staging", version="v2")
    outcome.stages = [stage(0, 5, first), stage(1, 25, second)]
    with (
        FakeSlackAPI(token="xoxb-story", channels=["deploys"]) as slack,
        FakeGrafanaAPI(token="glsa-story") as grafana,
    ):
        backends = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            notifiers=(
                SlackNotifier(SecretStr("xoxb-story"), "#deploys", base_url=slack.base_url),
            ),
            ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
            annotators=(GrafanaAnnotator(SecretStr("glsa-story"), grafana.base_url, "shop"),),
        )
        tell(backends, outcome)
        parent, *replies = slack.messages
        points = grafana.annotations

    assert [r.thread_ts for r in replies] == [parent.ts, parent.ts]
    assert [r.text for r in replies] == [
        "Stage 1 · 5% canary · promoted · errors 0.10%, P95 20 ms, 342 requests",
        "Stage 2 · 25% canary · promoted · errors 0.10%, P95 20 ms, 342 requests",
    ]
    assert "On-call: @alice" in parent.text
    region, *points = points
    assert region["text"] == "deploy shop v2 to staging (canary)"
    assert [p["time"] for p in points] == [
        int(first.timestamp() * 1000),
        int(second.timestamp() * 1000),
    ]
    assert all("service:shop" in p["tags"] for p in points)


class BrokenThread:
    """A threaded notifier and annotator that breaks every promise (raises)."""

    def describe(self) -> str:
        return "broken"

    def post(self, text: str):
        raise RuntimeError("post")

    announce = reply = conclude = post  # type: ignore[assignment]

    def start_region(self, text, tags):
        raise RuntimeError("start")

    point = end_region = start_region  # type: ignore[assignment]


@flow(name="deploy-story-broken-under-test")
def tell_broken(backends: Backends, outcome: ReleaseOutcome) -> str:
    backends.story.record(Started(Deploy.of(outcome)))
    backends.story.record(PLAN)
    for stage in outcome.stages:
        backends.story.record(StageEnded(stage))
    trigger = Trigger(0, 5, "error_rate", 0.2, 0.05, "long statistics", requests=60)
    backends.story.record(RolledBack(trigger, "v1"))
    return "went on"


def test_notifiers_that_raise_block_nothing(prefect_server, tmp_path: Path):
    service = FakeService()
    outcome = ReleaseOutcome(service="shop", environment="staging", version="v2")
    outcome.stages = [stage(0, 5, datetime(2026, 11, 28, 9, 0, tzinfo=UTC))]
    broken = BrokenThread()
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(broken, service.notifier),  # type: ignore[arg-type]
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}"),
        annotators=(broken,),  # type: ignore[arg-type]
    )
    assert tell_broken(backends, outcome) == "went on"
    # The notifier without threads still got the announcement and the rollback notice, which
    # names the trigger with its figure and limit.
    announcement, notice = service.notifier.messages
    assert announcement.startswith(":rocket: Deploying *shop* `v2` to *staging*")
    assert notice == (
        ":rewind: shop v2 rolled back to v1: error rate 20.0% over 60 requests, above the 5% "
        "limit\n> All traffic is on v1; checking it and gathering the evidence"
    )
