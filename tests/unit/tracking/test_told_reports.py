"""The reports a person reads after a deploy, rendered by one renderer from the deploy's record as
the tracking database keeps it (``Ledger.record``): every path (a stage rollback, an early stop,
verification, a refused gate, a success) goes through the same code from the same record. Each
headline names its trigger with its figure and limit, stage tables show the last figures
measured, and each figure is told once."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.checks.result import CheckStatus
from deployflow.notify.report import (
    ReportEvidence,
    deploy_summary,
    incident_report,
    lines_around,
    render,
    stage_rows,
)
from deployflow.release import (
    CheckRecord,
    ReleaseOutcome,
    RollbackEvidence,
    RollbackRecord,
    stage_trigger,
    verification_trigger,
)
from deployflow.rollout import StageResult
from deployflow.tracking.ledger import Ledger
from deployflow.tracking.record import DeployRecord
from deployflow.verify import VerificationCheck, VerificationReport
from tests.samples import record_in, rolled_back

pytestmark = pytest.mark.unit

# The deploy started ten minutes ago: its row ends now, when it is recorded.
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
HEALTHY = VerificationReport((VerificationCheck("health", True, True, "200 in 3 ms"),))
# The futility rule's reason, as long as the analysis writes it.
FUTILE = (
    "the stage cannot show the canary healthy in the time it has left: error rate canary 11.3% "
    "(99.9% CI 5.3-21.7%) over 60 requests vs stable 0.10% over 1,140 requests: even at 6.2%, "
    "the lowest rate these requests plausibly allow, the 120 requests expected by the stage's "
    "last look could not show it below 5% (upper bound 9.9%)"
)
BREACH = (
    "error rate canary 20.0% (99.9% CI 14.1-27.5%) over 512 requests vs stable 0.10% over 9,800 "
    "requests: above the 5% limit with 99.9% confidence"
)
RAW_FLOAT = re.compile(r"\d\.\d{5,}")


@pytest.fixture
def ledger(tracking_engine: Engine) -> Ledger:
    return Ledger(tracking_engine)


def stage(index: int, weight: int, verdict: Verdict, *looks: Measurement, reason=None):
    start = T0 + timedelta(seconds=30 * index)
    return StageResult(
        index, weight, verdict, list(looks), reason, start, start + timedelta(seconds=30)
    )


def look(outcome: Outcome, rate: float, p95: float, requests: float, **fields) -> Measurement:
    stable = MetricSample(0.001, 0.0199587, 9800.4)
    return Measurement(outcome, MetricSample(rate, p95, requests), 0.02, control=stable, **fields)


def release(**fields) -> ReleaseOutcome:
    return ReleaseOutcome(
        service="shop", environment="production", version="v2", previous_version="v1",
        strategy="canary", started_at=T0 - timedelta(seconds=5), **fields,
    )  # fmt: skip


def markdown(record: DeployRecord) -> str:
    report = render(record)
    assert report is not None
    return report.markdown


def test_a_stage_rollback_is_told_from_its_record(ledger):
    promoted = stage(0, 5, Verdict.PROMOTE, look(Outcome.SUCCESSFUL, 0.002, 0.0213, 342.2053))
    breach = Breach("error_rate", 0.2, 0.05, BREACH)
    failed = stage(
        1, 25, Verdict.ROLLBACK,
        look(Outcome.FAILED, 0.2, 0.0231, 512.4, evidence=("log: 10:00:58 ERROR pay failed",)),
        reason=breach,
    )  # fmt: skip
    trigger = stage_trigger(failed, max_error_rate=0.05)
    assert trigger is not None
    outcome = release(status="rolled_back", stages=[promoted, failed])
    tail = "\n".join(
        ["GET /pay 500", "Traceback (most recent call last):", '  File "pay.py", line 3',
         "ValueError: card refused", "GET / 200"]
    )  # fmt: skip
    evidence = RollbackEvidence(canary_log_tail=tail, last_measurements=tuple(failed.measurements))
    outcome.rollback = RollbackRecord(trigger, verification=HEALTHY, evidence=evidence)
    outcome.message = f"rolled back to v1: {trigger.headline}"

    record = record_in(ledger, outcome)
    md = markdown(record)

    headline = "error rate 20.0% over 512 requests, above the 5% limit"
    assert f"- **Trigger**: {headline}, at stage 2" in md
    timeline = md.split("## Timeline")[1].split("##")[0]
    assert "| +5 s | Stage 1: 5% of traffic on v2 |" in timeline
    assert "| +1 min 5 s | Stage 2 rolled back: errors 20.0%, P95 23 ms, 512 requests |" in timeline
    assert "| +1 min 5 s | Trigger: error rate 20.0% over 512 requests" in timeline
    assert "| 1 | 5% canary | promoted | 0.20% | 21 ms | 0.10% | 20 ms | 342 | successful 1 |" in md
    assert "| 2 | 25% canary | rolled back | 20.0% | 23 ms | 0.10% | 20 ms | 512 | failed 1 |" in md
    assert md.count("99.9% CI") == 1  # the statistics, once, for a reviewer to check
    assert not RAW_FLOAT.search(md), md
    # No log gathered afterwards: the tail the rollback kept, the traceback's exception named.
    log = md.split("## Canary log around the trigger")[1].split("##")[0]
    assert "ValueError: card refused" in log
    assert "log: 10:00:58 ERROR pay failed" in md.split("## What the other signals saw")[1]
    assert "- ✅ health: 200 in 3 ms" in md  # the restored version's verification
    summary = deploy_summary(record)
    assert f"Rolled back at stage 2 (25% of traffic on the new version): {headline}." in summary
    assert "99.9% CI" not in summary  # the summary's headline; the statistics live in the report


def test_an_early_stop_names_its_trigger_with_the_figures_it_measured(ledger):
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

    md = markdown(record_in(ledger, outcome))

    headline = "error rate 11.3% over 60 requests, above the 5% limit"
    assert f"- **Trigger**: {headline}" in md
    assert "n/a" not in md.split("## Canary and stable")[0]  # what happened: every figure known
    assert "Stage 1 rolled back: errors 11.3%, P95 21 ms, 60 requests" in md
    assert "no data" not in md
    assert "| 1 | 5% canary | rolled back | 11.3% | 21 ms |" in md
    assert "metrics backend" not in md  # every query answered
    assert md.count("99.9% CI") == 1


def test_a_verification_rollback_names_the_check_with_its_figure_and_limit(ledger):
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

    record = record_in(ledger, outcome)
    md = markdown(record)

    trigger_line = "post-deploy verification failed: error rate 9.0%, above the 5% limit"
    assert f"- **Trigger**: {trigger_line}" in md
    assert f"Trigger: {trigger_line}" in md  # timeline
    assert "| 1 | 100% canary | promoted | 0.10% | 20 ms |" in md
    summary = deploy_summary(record)
    assert "| metrics | **no** | over the last 6 s: error rate 9.0% over 300 requests |" in summary
    assert f"Rolled back at stage n/a (100% of traffic on the new version): {trigger_line}." in (
        summary
    )


def test_a_success_is_told_with_each_stage_s_last_figures(ledger):
    stages = [
        stage(0, 5, Verdict.PROMOTE, look(Outcome.INCONCLUSIVE, 0.0, 0.019, 12),
              look(Outcome.SUCCESSFUL, 0.002, 0.02403571428571428, 171.258)),
        stage(1, 100, Verdict.PROMOTE, look(Outcome.SUCCESSFUL, 0.001, 0.02, 642.5)),
    ]  # fmt: skip
    stages[1] = replace(stages[1], note="promoted by on_inconclusive: promote, within the limits")
    outcome = release(status="succeeded", stages=stages, verification=HEALTHY)
    outcome.baseline_p95_seconds = 0.0199587912
    outcome.message = "v2 serves all the traffic and passed verification"

    record = record_in(ledger, outcome)
    md = markdown(record)

    assert md.startswith("# ✅ shop v2 released to production")
    row = "| 1 | 5% canary | promoted | 0.20% | 24 ms | 0.10% | 20 ms | 171 | "
    assert f"{row}inconclusive 1, successful 1 | 30 s |" in md
    assert "| 2 | 100% canary | promoted | 0.10% | 20 ms | 0.10% | 20 ms | 642 |" in md
    assert "- Stage 2: promoted by on_inconclusive: promote, within the limits" in md
    assert "| Canary requests judged | 814 |" in md
    summary = deploy_summary(record)
    assert "- Baseline P95 of the stable version: 20 ms" in summary
    assert "| health | yes | 200 in 3 ms |" in summary
    for text in (md, summary):
        assert not RAW_FLOAT.search(text), text
        assert "171.258" not in text
    # The deploy-stages table artifact: figures for people, not raw floats.
    first = stage_rows(record)[0]
    assert (first["canary P95"], first["canary requests"], first["took"]) == (
        "24 ms",
        "171",
        "30 s",
    )


def test_a_refused_gate_is_told_from_its_record_and_gets_no_incident(ledger):
    lint = CheckRecord("pre_checks", "lint", CheckStatus.FAILED, "3 errors", figure="3 errors")
    outcome = release(status="aborted", checks=[lint])
    outcome.message = "blocked before any traffic moved: lint failed (3 errors)"

    record = record_in(ledger, outcome)

    assert render(record) is None  # nothing released, nothing rolled back
    summary = deploy_summary(record)
    assert summary.startswith("# ⛔ shop v2 → production: aborted")
    assert "| pre_checks | lint | failed | 3 errors |" in summary
    assert outcome.message in summary
    assert "## Stages" not in summary


def test_the_risk_table_is_kept_with_the_record(ledger):
    outcome = release(status="succeeded")
    factor = {"name": "change_failure_rate", "fact": "2 of the last 5 deploys failed",
              "weight": 40.0, "units": 0.4, "contribution": 16.0}  # fmt: skip
    outcome.strategy_rationale = "risk 16 (medium): canary"
    outcome.strategy_factors = {"score": 16.0, "level": "medium", "factors": [factor]}

    summary = deploy_summary(record_in(ledger, outcome))

    assert "- Strategy: **canary** (risk 16 (medium): canary)" in summary
    assert "## Risk: medium (score 16)" in summary
    assert "| change_failure_rate | 2 of the last 5 deploys failed | 40 | 0.4 | 16 |" in summary


def test_an_incident_report_needs_a_rollback(ledger):
    outcome = rolled_back()
    outcome.rollback = None
    with pytest.raises(ValueError, match="nothing rolled back"):
        incident_report(record_in(ledger, outcome), ReportEvidence(), None)


def test_the_log_excerpt_keeps_the_exception_that_ends_a_traceback():
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
    excerpt = lines_around(log, datetime(2026, 11, 28, 10, 0, 30, tzinfo=UTC))
    assert excerpt == (
        "2026-11-28T10:00:20Z ERROR request failed",
        "ValueError: card processor refused the token",
        "2026-11-28T10:00:21Z INFO still serving",
    )
    untimed = lines_around(log.replace("2026-11-28T10:00:2", "at "), None)
    assert "ValueError: card processor refused the token" in untimed
    assert "Traceback (most recent call last):" in untimed
