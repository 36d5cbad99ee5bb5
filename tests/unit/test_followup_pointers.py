"""Every message that points to a deploy's report names ``deployflow report ID`` (and the run)."""

from __future__ import annotations

import pytest

from deployflow.notify.story import report_pointer
from deployflow.release import ReleaseOutcome, RollbackRecord, Trigger
from flows.followup import rollback_followup, run_link

pytestmark = pytest.mark.unit


def test_the_follow_up_names_the_report_command_and_the_run() -> None:
    link = "http://prefect.test/runs/flow-run/abc"
    text = rollback_followup("deployflow.deployment.41", "shop", "v3", "prod", "errors", link)
    assert f"`deployflow report 41`, or the run in the Prefect UI: {link}" in text
    assert "deployflow history" not in text
    assert "Prefect UI" not in rollback_followup("deployflow.deployment.41", "s", "v", "e", "")


def test_the_run_link_needs_a_ui_and_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    with temporary_settings({PREFECT_UI_URL: "http://prefect.test/"}):
        assert run_link("abc") == "http://prefect.test/runs/flow-run/abc"
        assert run_link("") is None
        assert run_link("None") is None  # an event without a run renders its payload so


@pytest.mark.parametrize(
    ("status", "dry_run", "rolled_back", "pointer"),
    [
        ("rolled_back", False, True, "Incident report: `deployflow report 7`"),
        ("failed", False, True, "Incident report: `deployflow report 7`"),  # rollback failed
        ("failed", False, False, None),  # interrupted, or did not start: no report
        ("succeeded", False, False, None),
        ("rolled_back", True, True, None),
    ],
)
def test_the_thread_end_points_to_the_incident_report(
    status: str, dry_run: bool, rolled_back: bool, pointer: str | None
) -> None:
    outcome = ReleaseOutcome("shop", "prod", "v3", deployment_id=7, dry_run=dry_run)
    outcome.status = status  # type: ignore[assignment]
    if rolled_back:
        trigger = Trigger(0, 5, "error_rate", 0.2, 0.05, "errors")
        outcome.rollback = RollbackRecord(trigger)
    assert report_pointer(outcome) == pointer
