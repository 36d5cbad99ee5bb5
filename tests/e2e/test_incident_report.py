"""A rolled-back deploy on the sandbox tells its story: the incident report, from the real
Prometheus (range queries, breakdown), the canary's own log and the tracking database, with a
chart that opens as an image; `deployflow report` prints it again from the tracking database."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from deployflow.release import outcome_of
from deployflow.sandbox.supervisor import Sandbox
from deployflow.tracking import db, repository
from deployments.cli import main
from flows.deploy import deploy
from tests.e2e.conftest import EXAMPLE_SPEC

pytestmark = pytest.mark.e2e


def short_spec() -> Path:
    """The example spec with two stages, beside it so its relative paths still hold."""
    text = EXAMPLE_SPEC.read_text()
    assert "steps: [5, 25, 50, 100]" in text
    path = EXAMPLE_SPEC.parent / ".test-incident-report.yaml"
    path.write_text(text.replace("steps: [5, 25, 50, 100]", "steps: [50, 100]"))
    return path


def test_a_rollback_writes_the_incident_report_with_a_chart(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    spec_file = short_spec()
    try:
        state = deploy(spec_path=str(spec_file), version="v3", return_state=True)
    finally:
        spec_file.unlink()
    result = outcome_of(state.result(raise_on_failure=False))
    assert isinstance(result, dict), result
    assert result["status"] == "rolled_back", result["message"]

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
