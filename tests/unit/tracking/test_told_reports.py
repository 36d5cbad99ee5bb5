"""The reports a person reads after a deploy, rendered from the deploy's record as the tracking
database keeps it: each headline names its trigger with its figure and limit, stage tables show
the last figures measured, and each figure is told once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.notify.report import ReportEvidence, render
from deployflow.release import (
    ReleaseOutcome,
    RollbackRecord,
    stage_trigger,
    verification_trigger,
)
from deployflow.rollout import StageResult
from deployflow.tracking.ledger import Ledger
from deployflow.verify import VerificationCheck, VerificationReport

pytestmark = pytest.mark.unit

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
HEALTHY = VerificationReport((VerificationCheck("health", True, True, "200 in 3 ms"),))
# The futility rule's reason, as long as the analysis writes it.
FUTILE = (
    "the stage cannot show the canary healthy in the time it has left: error rate canary 11.3% "
    "(99.9% CI 5.3-21.7%) over 60 requests vs stable 0.10% over 1,140 requests: even at 6.2%, "
    "the lowest rate these requests plausibly allow, the 120 requests expected by the stage's "
    "last look could not show it below 5% (upper bound 9.9%)"
)


def stage(index: int, weight: int, verdict: Verdict, *looks: Measurement, reason=None):
    start = T0 + timedelta(seconds=30 * index)
    return StageResult(
        index, weight, verdict, list(looks), reason, start, start + timedelta(seconds=30)
    )


def look(outcome: Outcome, rate: float, p95: float, requests: float) -> Measurement:
    return Measurement(outcome, MetricSample(rate, p95, requests), 0.02)


def recorded(tmp_path: Path, outcome: ReleaseOutcome) -> dict:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 'tracking.db'}")
    outcome.started_at = T0
    outcome.deployment_id = ledger.start(outcome)
    for s in outcome.stages:
        ledger.stage_observed(outcome.deployment_id, s)
    ledger.record_outcome(outcome, outcome.message)
    return ledger.deployment(outcome.deployment_id)


def release(**fields) -> ReleaseOutcome:
    return ReleaseOutcome(
        service="shop", environment="production", version="v2", previous_version="v1",
        strategy="canary", **fields,
    )  # fmt: skip


def markdown(deploy: dict) -> str:
    report = render(deploy, ReportEvidence(), None)
    assert report is not None
    return report.markdown


def test_a_futility_rollback_names_its_trigger_with_the_figures_it_measured(tmp_path):
    futile = stage(
        0, 5, Verdict.ROLLBACK,
        look(Outcome.INCONCLUSIVE, 0.113, 0.021, 60.4),
        reason=Breach("inconclusive", None, None, FUTILE),
    )  # fmt: skip
    trigger = stage_trigger(futile, max_error_rate=0.05)
    assert trigger is not None
    outcome = release(status="rolled_back", stages=[futile])
    outcome.rollback = RollbackRecord(trigger, verification=HEALTHY)
    outcome.message = f"rolled back to v1: {trigger.headline}"

    md = markdown(recorded(tmp_path, outcome))

    headline = "error rate 11.3% over 60 requests, above the 5% limit"
    assert f"- **Trigger**: {headline}" in md
    assert "n/a" not in md.split("## Canary and stable")[0]  # what happened: every figure known
    assert "Stage 1 rolled back: errors 11.3%, P95 21 ms, 60 requests" in md
    assert "no data" not in md
    assert "| 1 | 5% | rolled back | 11.3% | 21 ms |" in md
    assert "metrics backend" not in md  # every query answered
    assert md.count("99.9% CI") == 1  # the statistics, once, for a reviewer to check


def test_a_verification_rollback_names_the_check_with_its_figure_and_limit(tmp_path):
    promoted = stage(0, 100, Verdict.PROMOTE, look(Outcome.SUCCESSFUL, 0.001, 0.02, 400))
    failed = VerificationReport(
        (
            VerificationCheck(
                "metrics", False, True, "over the last 6 s: error rate 9.0% over 300 requests",
                metric="error_rate", value=0.09, threshold=0.05,
            ),
        )
    )  # fmt: skip
    trigger = verification_trigger(failed)
    assert trigger is not None
    outcome = release(status="rolled_back", stages=[promoted], verification=failed)
    outcome.rollback = RollbackRecord(trigger, verification=HEALTHY)

    md = markdown(recorded(tmp_path, outcome))

    trigger_line = "post-deploy verification failed: metrics: error rate 9.0%, above the 5% limit"
    assert f"- **Trigger**: {trigger_line}" in md
    assert "Trigger: post-deploy verification failed: metrics: error rate 9.0%" in md  # timeline
    assert "| 1 | 100% | promoted | 0.10% | 20 ms |" in md


def test_a_success_summary_shows_each_stage_s_last_figures(tmp_path):
    stages = [
        stage(0, 5, Verdict.PROMOTE, look(Outcome.INCONCLUSIVE, 0.0, 0.019, 12),
              look(Outcome.SUCCESSFUL, 0.002, 0.0240357, 171.258)),
        stage(1, 100, Verdict.PROMOTE, look(Outcome.SUCCESSFUL, 0.001, 0.02, 642.5)),
    ]  # fmt: skip
    outcome = release(status="succeeded", stages=stages, verification=HEALTHY)
    outcome.message = "v2 serves all the traffic and passed verification"

    md = markdown(recorded(tmp_path, outcome))

    assert md.startswith("# ✅ shop v2 released to production")
    assert "| 1 | 5% | promoted | 0.20% | 24 ms | n/a | n/a | 171 |" in md
    assert "| 2 | 100% | promoted | 0.10% | 20 ms | n/a | n/a | 642 |" in md
    assert "0.0240357" not in md
    assert "171.258" not in md
    assert "| Canary requests judged | 814 |" in md


def test_the_log_excerpt_keeps_the_exception_that_ends_a_traceback():
    from deployflow.notify.report import lines_around

    log = "\n".join(
        [
            "2026-11-28T10:00:20Z ERROR request failed",
            "Traceback (most recent call last):",
            '  File "app.py", line 12, in pay',
            "    charge(card)",
            "ValueError: card processor refused the token",
            "2026-11-28T10:00:21Z INFO still serving",
        ]
    )
    excerpt = lines_around(log, T0 + timedelta(seconds=30))
    assert excerpt == (
        "2026-11-28T10:00:20Z ERROR request failed",
        "ValueError: card processor refused the token",
        "2026-11-28T10:00:21Z INFO still serving",
    )
    untimed = lines_around(log.replace("2026-11-28T10:00:2", "at "), None)
    assert "ValueError: card processor refused the token" in untimed
    assert "Traceback (most recent call last):" in untimed
