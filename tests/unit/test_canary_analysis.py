from __future__ import annotations

import math

import pytest

from deployflow.analysis import (
    MetricSample,
    Outcome,
    Thresholds,
    Verdict,
    analyse_stage,
    evaluate,
)

pytestmark = pytest.mark.unit

T = Thresholds(
    max_error_rate=0.05,
    max_p95_ratio=2.0,
    min_requests=20,
    failure_limit=0,
    consecutive_error_limit=2,
    max_hold_measurements=2,
)
BASE = 0.020


def ok() -> MetricSample:
    return MetricSample(error_rate=0.0, p95_seconds=0.022, requests=100)


def m(sample: MetricSample):
    return evaluate(sample, BASE, T)


def test_healthy_sample_is_successful() -> None:
    assert m(ok()).outcome is Outcome.SUCCESSFUL


def test_error_rate_above_maximum_fails_with_figures() -> None:
    result = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    assert result.outcome is Outcome.FAILED
    (breach,) = result.breaches
    assert (breach.metric, breach.value, breach.threshold) == ("error_rate", 0.2, 0.05)


def test_error_rate_at_maximum_is_allowed() -> None:
    assert (
        m(MetricSample(error_rate=0.05, p95_seconds=0.02, requests=100)).outcome
        is Outcome.SUCCESSFUL
    )


def test_p95_above_ratio_times_baseline_fails() -> None:
    result = m(MetricSample(error_rate=0.0, p95_seconds=0.041, requests=100))
    assert result.outcome is Outcome.FAILED
    assert result.breaches[0].metric == "p95_latency"
    assert result.breaches[0].threshold == pytest.approx(0.040)


def test_too_few_requests_is_inconclusive_even_when_errors_look_bad() -> None:
    result = m(MetricSample(error_rate=1.0, p95_seconds=5.0, requests=3))
    assert result.outcome is Outcome.INCONCLUSIVE


@pytest.mark.parametrize("missing", [None, math.nan])
def test_no_data_is_inconclusive(missing: float | None) -> None:
    assert (
        m(MetricSample(error_rate=missing, p95_seconds=0.02, requests=missing)).outcome
        is Outcome.INCONCLUSIVE
    )
    assert (
        m(MetricSample(error_rate=missing, p95_seconds=0.02, requests=100)).outcome
        is Outcome.INCONCLUSIVE
    )
    assert (
        m(MetricSample(error_rate=0.0, p95_seconds=missing, requests=100)).outcome
        is Outcome.INCONCLUSIVE
    )


def test_query_failure_is_an_error_measurement() -> None:
    result = m(MetricSample(None, None, None, error="connection refused"))
    assert result.outcome is Outcome.ERROR
    assert "refused" in result.note


def test_without_baseline_latency_is_not_judged() -> None:
    result = evaluate(MetricSample(0.0, 9.9, 100), None, T)
    assert result.outcome is Outcome.SUCCESSFUL


def test_stage_promotes_only_when_window_complete_and_last_successful() -> None:
    good = [m(ok()), m(ok())]
    assert analyse_stage(good, T, window_complete=False).verdict is Verdict.CONTINUE
    assert analyse_stage(good, T, window_complete=True).verdict is Verdict.PROMOTE


def test_one_failure_rolls_back_at_once_with_reason() -> None:
    bad = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    decision = analyse_stage([m(ok()), bad], T, window_complete=False)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "error_rate"


def test_failure_limit_tolerates_that_many() -> None:
    bad = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    lenient = Thresholds(failure_limit=1)
    assert analyse_stage([bad], lenient, window_complete=False).verdict is Verdict.CONTINUE
    assert analyse_stage([bad, bad], lenient, window_complete=False).verdict is Verdict.ROLLBACK


def test_consecutive_errors_past_limit_roll_back() -> None:
    err = m(MetricSample(None, None, None, error="down"))
    assert analyse_stage([err, err], T, window_complete=False).verdict is Verdict.CONTINUE
    decision = analyse_stage([err, err, err], T, window_complete=False)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "metrics"


def test_errors_interrupted_by_success_reset_the_run() -> None:
    err = m(MetricSample(None, None, None, error="down"))
    assert (
        analyse_stage([err, err, m(ok()), err, err], T, window_complete=False).verdict
        is Verdict.CONTINUE
    )


def test_missing_data_never_promotes() -> None:
    none = m(MetricSample(None, None, None))
    decision = analyse_stage([none, none], T, window_complete=True, held=0)
    assert decision.verdict is Verdict.CONTINUE  # hold for more data
    decision = analyse_stage([none, none, none, none], T, window_complete=True, held=2)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "inconclusive"


def test_empty_stage_never_promotes() -> None:
    assert analyse_stage([], T, window_complete=True, held=5).verdict is Verdict.ROLLBACK
