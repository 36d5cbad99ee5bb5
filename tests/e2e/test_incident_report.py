"""A rolled-back deploy on the sandbox tells its story: while it runs, in its Slack thread (a
local Slack API), on the Grafana dashboard (a local annotations API) and in Prefect's event feed;
afterwards, the incident report, from the real Prometheus (range queries, breakdown), the
canary's own log and the tracking database, with a chart that opens as an image; `deployflow
report` prints it again from the tracking database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventRelatedFilter,
    EventResourceFilter,
)

from deployflow.fakes.grafana_api import FakeGrafanaAPI
from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.polling import wait_for
from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.tracking import db, repository
from deployments.cli import main
from flows.deploy import deploy
from tests.e2e.conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.e2e


def short_spec(slack_url: str, grafana_url: str) -> Path:
    """The example spec with two stages, a Slack channel and a Grafana dashboard, beside it so
    its relative paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    assert "steps: [5, 25, 50, 100]" in text
    assert "\nnotifications:\n" in text
    told = (
        "\nnotifications:\n"
        f'  notifiers: [{{kind: slack, channel: "#deploys", base_url: "{slack_url}"}}]\n'
        f'  dashboards: [{{kind: grafana, url: "{grafana_url}", dashboard_uid: demo}}]\n'
    )
    path = EXAMPLE_SPEC.parent / ".test-incident-report.yaml"
    path.write_text(
        text.replace("steps: [5, 25, 50, 100]", "steps: [50, 100]").replace(
            "\nnotifications:\n", told
        )
    )
    return path


def deploy_events(deployment_id: int, flow_run_id: str) -> list[Any] | None:
    """The events about this deploy, oldest first, once its ending arrived (the server
    persists events in batches, a few seconds late). The session's Prefect server is shared by
    tests with tracking databases of their own, whose row ids repeat: the deploy's run tells
    this deploy's events apart."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            EventFilter(
                event=EventNameFilter(prefix=["deployflow.deploy."]),
                resource=EventResourceFilter(id=[f"deployflow.deployment.{deployment_id}"]),
                related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
            ),
            limit=50,
        )
    found = sorted(page.events, key=lambda e: e.occurred)
    return found if any(e.event == "deployflow.deploy.rolled-back" for e in found) else None


def test_a_rollback_is_told_as_it_happens_and_writes_the_incident_report_with_a_chart(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYFLOW_SLACK_TOKEN", "xoxb-story")
    monkeypatch.setenv("DEPLOYFLOW_GRAFANA_TOKEN", "glsa-story")
    with (
        FakeSlackAPI(token="xoxb-story", channels=["deploys"]) as slack,
        FakeGrafanaAPI(token="glsa-story") as grafana,
    ):
        spec_file = short_spec(slack.base_url, grafana.base_url)
        try:
            state = deploy(
                environment="sandbox", spec_path=str(spec_file), version="v3", return_state=True
            )
        finally:
            spec_file.unlink()
        messages, updates, annotations = slack.messages, slack.updates, grafana.annotations
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "rolled_back", result["message"]

    # Slack: one parent message, the stage and the rollback as replies in its thread, and the
    # parent rewritten with the outcome.
    parent, *replies = messages
    assert "v3" in (parent.text or "")
    assert replies, "nothing was told in the thread"
    assert {r.thread_ts for r in replies} == {parent.ts}
    texts = [r.text or "" for r in replies]
    assert texts[0].startswith("Stage 1 · 50% canary · *rollback*"), texts
    assert any(t.startswith(":rewind: demo v3 rolled back to v") for t in texts), texts
    assert updates
    assert {u.ts for u in updates} == {parent.ts}
    assert "rolled back" in (updates[-1].text or "")
    # Grafana: a region over the deploy (closed when it ended) and points for the stage and
    # the rollback, all tagged with the service.
    regions = [a for a in annotations if a["timeEnd"] > a["time"]]
    points = [a for a in annotations if a["timeEnd"] == a["time"]]
    assert len(regions) == 1, annotations
    assert len(points) >= 2, annotations
    assert all(a["dashboardUID"] == "demo" for a in annotations)
    assert all("service:demo" in a["tags"] for a in annotations)
    # Prefect's event feed: the deploy started and was rolled back, about demo v3 in sandbox.
    events = wait_for(
        lambda: deploy_events(result["deployment_id"], result["flow_run_id"]),
        timeout=60,
        interval=1,
        what="the deploy's events in Prefect",
    )
    names = [e.event for e in events]
    assert names[0] == "deployflow.deploy.started", names
    assert names[-1] == "deployflow.deploy.rolled-back", names
    related = {r.role: r.id for r in events[-1].related}
    assert related["service"] == "deployflow.service.demo"
    assert related["version"] == "deployflow.version.demo.v3"
    assert related["environment"] == "deployflow.environment.sandbox"

    # Written under the data dir, beside its chart, and kept in the tracking database.
    folder = db.data_dir() / "reports" / f"demo-{result['deployment_id']}"
    markdown = (folder / "report.md").read_text()
    with Image.open(folder / "chart.png") as image:
        assert image.format == "PNG"
        assert image.size == (800, 500)
    engine = db.make_engine(db.database_url())
    try:
        with db.session_factory(engine)() as s:
            row = repository.get_deployment(s, result["deployment_id"])
            (kept,) = row.reports
            assert (kept.kind, kept.markdown) == ("incident", markdown)
            assert kept.chart_png == (folder / "chart.png").read_bytes()
            assert row.commit_at is not None, "the released commit's time is recorded"
    finally:
        engine.dispose()

    assert markdown.startswith("# Incident: demo v3 rolled back in sandbox")
    assert "](chart.png)" in markdown
    assert "Trigger: error rate" in markdown
    assert "50% canary" in markdown  # the router's state, in words
    # The breakdown from Prometheus: the canary's failures by endpoint, as whole requests.
    breakdown = markdown.split("Canary requests by endpoint and status:")[1].split("\n\n")[1]
    assert "| 500 |" in breakdown
    assert "`/api/" in breakdown
    # The canary's own error lines from around the trigger.
    log = markdown.split("## Canary log around the trigger")[1].split("##")[0]
    assert "ERROR v3 /api/" in log
    assert "answered 500: injected fault" in log
    causes = markdown.split("## Candidate causes")[1].split("##")[0]
    assert "1. **A defect in v3 that fails requests" in causes

    # `deployflow report RUN_ID --output FILE` from the tracking database alone.
    out = tmp_path / "incident.md"
    assert main(["report", result["flow_run_id"], "--output", str(out)]) == 0
    assert "](incident-chart.png)" in out.read_text()
    with Image.open(tmp_path / "incident-chart.png") as image:
        assert image.format == "PNG"
