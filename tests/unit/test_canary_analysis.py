from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployflow.analysis import (
    MetricSample,
    Outcome,
    Thresholds,
    Verdict,
    analyse_stage,
    evaluate,
    exposure_confidence,
)

pytestmark = pytest.mark.unit

T = Thresholds(
    max_error_rate=0.05,
    max_p95_ratio=2.0,
    min_requests=20,
    failure_limit=0,
    consecutive_error_limit=2,
)
BASE = 0.020


def ok() -> MetricSample:
    # 400 requests without an error: enough for the 99% upper bound (1.6%) to clear 5%.
    return MetricSample(error_rate=0.0, p95_seconds=0.022, requests=400)


def m(sample: MetricSample):
    return evaluate(sample, BASE, T)


def test_healthy_sample_is_successful() -> None:
    assert m(ok()).outcome is Outcome.SUCCESSFUL


def test_error_rate_above_maximum_fails_with_figures() -> None:
    result = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    assert result.outcome is Outcome.FAILED
    (breach,) = result.breaches
    assert (breach.metric, breach.value, breach.threshold) == ("error_rate", 0.2, 0.05)


def test_error_rate_at_maximum_is_not_failed_but_not_shown_healthy_either() -> None:
    # Before: 5.0% over 100 requests passed. Its interval (1.6-14%) straddles 5%: the stage
    # keeps observing instead of promoting on it.
    result = m(MetricSample(error_rate=0.05, p95_seconds=0.02, requests=100))
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "not yet shown below the 5.0% limit" in result.note


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
    result = evaluate(MetricSample(0.0, 9.9, 400), None, T)
    assert result.outcome is Outcome.SUCCESSFUL


def test_stage_promotes_only_when_may_promote_and_last_successful() -> None:
    good = [m(ok()), m(ok())]
    assert analyse_stage(good, T, may_promote=False).verdict is Verdict.CONTINUE
    assert analyse_stage(good, T, may_promote=True).verdict is Verdict.PROMOTE


def test_one_failure_rolls_back_at_once_with_reason() -> None:
    bad = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    decision = analyse_stage([m(ok()), bad], T, may_promote=False)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "error_rate"


def test_failure_limit_tolerates_that_many() -> None:
    bad = m(MetricSample(error_rate=0.2, p95_seconds=0.02, requests=100))
    lenient = Thresholds(failure_limit=1)
    assert analyse_stage([bad], lenient, may_promote=False).verdict is Verdict.CONTINUE
    assert analyse_stage([bad, bad], lenient, may_promote=False).verdict is Verdict.ROLLBACK


def test_consecutive_errors_past_limit_roll_back() -> None:
    err = m(MetricSample(None, None, None, error="down"))
    assert analyse_stage([err, err], T, may_promote=False).verdict is Verdict.CONTINUE
    decision = analyse_stage([err, err, err], T, may_promote=False)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "metrics"


def test_errors_interrupted_by_success_reset_the_run() -> None:
    err = m(MetricSample(None, None, None, error="down"))
    assert (
        analyse_stage([err, err, m(ok()), err, err], T, may_promote=False).verdict
        is Verdict.CONTINUE
    )


def test_missing_data_never_promotes() -> None:
    none = m(MetricSample(None, None, None))
    decision = analyse_stage([none, none], T, may_promote=True)
    assert decision.verdict is Verdict.CONTINUE  # keep observing for more data
    promote = Thresholds(on_inconclusive="promote")
    decision = analyse_stage([none, none], promote, may_promote=True, out_of_time=True)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "inconclusive"
    assert "there is nothing to promote on" in decision.reason.reason


def test_empty_stage_never_promotes() -> None:
    for rule in ("pause", "promote", "rollback"):
        rules = Thresholds(on_inconclusive=rule)  # type: ignore[arg-type]
        decision = analyse_stage([], rules, may_promote=True, out_of_time=True)
        assert decision.verdict is not Verdict.PROMOTE


# -- concurrent control and sample-size aware verdicts --------------------------------------------

INF = math.inf
BOUNDS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, INF)


def hist(*counts: float) -> tuple[tuple[float, float], ...]:
    """Cumulative (le, count) pairs, as Prometheus answers ``sum by (le)``."""
    total, pairs = 0.0, []
    for bound, count in zip(BOUNDS, counts, strict=True):
        total += count
        pairs.append((bound, total))
    return tuple(pairs)


def with_latency(requests: float, error_rate: float, *counts: float) -> MetricSample:
    return MetricSample(error_rate, None, requests, buckets=hist(*counts))


FAST = (300, 600, 80, 15, 5, 0, 0)  # P95 about 36 ms
SLOW_BOTH = (0, 0, 300, 600, 80, 15, 5)  # the same shape, four times slower


def test_the_verdict_explains_itself_in_numbers() -> None:
    canary = MetricSample(error_rate=256 / 4000, p95_seconds=0.02, requests=4000)
    stable = MetricSample(error_rate=0.005, p95_seconds=0.02, requests=30000)
    result = evaluate(canary, BASE, T, control=stable)
    assert result.outcome is Outcome.FAILED
    (breach,) = result.breaches
    assert breach.reason == (
        "error rate 6.4% over 4,000 requests, above the 5.0% limit "
        "(at least 5.3% at 99.9% confidence; stable 0.50% over 30,000 requests)"
    )


def test_three_percent_over_a_small_window_is_not_called_above_five() -> None:
    # 5 errors of 60 (8.3%) was a rollback before; its interval reaches down to 2%.
    result = m(MetricSample(error_rate=5 / 60, p95_seconds=0.02, requests=60))
    assert result.outcome is Outcome.INCONCLUSIVE
    assert "not yet shown below" in result.note


def test_more_looks_need_stronger_evidence() -> None:
    sample = MetricSample(error_rate=0.085, p95_seconds=0.02, requests=400)
    assert evaluate(sample, BASE, T, looks=1).outcome is Outcome.FAILED
    assert evaluate(sample, BASE, T, looks=1000).outcome is Outcome.INCONCLUSIVE


def test_load_that_slows_both_versions_is_not_blamed_on_the_canary() -> None:
    canary = with_latency(1000, 0.0, *SLOW_BOTH)
    stable = with_latency(5000, 0.0, *SLOW_BOTH)
    assert evaluate(canary, 0.036, T).outcome is Outcome.FAILED  # the baseline alone: blamed
    result = evaluate(canary, 0.036, T, control=stable)
    assert result.outcome is Outcome.SUCCESSFUL
    assert "in the same window (1.00x" in result.note


def test_a_canary_slower_than_stable_in_the_same_window_fails_on_latency() -> None:
    result = evaluate(
        with_latency(1000, 0.0, *SLOW_BOTH), 0.036, T, control=with_latency(5000, 0.0, *FAST)
    )
    assert result.outcome is Outcome.FAILED
    (breach,) = result.breaches
    assert breach.metric == "p95_latency"
    assert "rank test p<1e-6" in breach.reason
    assert breach.value is not None
    assert breach.threshold is not None
    assert breach.value > breach.threshold


def test_a_p95_past_the_ratio_on_a_few_tail_requests_is_not_a_breach() -> None:
    # Same distribution, but the canary's handful of slow requests land past 2x stable's P95.
    canary = with_latency(40, 0.0, 12, 22, 3, 0, 0, 3, 0)
    stable = with_latency(4000, 0.0, *FAST)
    result = evaluate(canary, 0.036, T, control=stable)
    assert result.outcome is not Outcome.FAILED
    assert "not beyond chance" in result.note


def test_without_stable_traffic_the_baseline_guards_latency() -> None:
    # The last stage at 100%: stable has no requests in the window.
    idle_stable = MetricSample(error_rate=None, p95_seconds=None, requests=0)
    result = evaluate(with_latency(1000, 0.0, *SLOW_BOTH), 0.036, T, control=idle_stable)
    assert result.outcome is Outcome.FAILED
    assert "pre-deploy baseline" in result.breaches[0].reason
    assert "no stable traffic to compare with" in result.note


def test_at_100_percent_a_service_slower_for_both_versions_is_not_the_canarys_harm() -> None:
    # Stable took 4x its pre-deploy P95 in the last window it served beside the canary (a busier
    # hour, a loaded machine); the canary at 100% is as slow: no breach, and the note says why.
    idle_stable = MetricSample(error_rate=None, p95_seconds=None, requests=0)
    canary = with_latency(1000, 0.0, *SLOW_BOTH)
    before = evaluate(canary, 0.036, T, control=idle_stable)
    assert before.outcome is Outcome.FAILED  # against the pre-deploy baseline alone
    result = evaluate(canary, 0.036, T, control=idle_stable, stable_p95_seconds=0.15)
    assert result.outcome is not Outcome.FAILED
    assert "stable's 150.0 ms in its last window beside the canary" in result.note
    assert "above its pre-deploy 36.0 ms" in result.note


def test_at_100_percent_a_canary_slower_than_stable_was_beside_it_still_fails() -> None:
    idle_stable = MetricSample(error_rate=None, p95_seconds=None, requests=0)
    canary = with_latency(1000, 0.0, *SLOW_BOTH)  # P95 about 4x 36 ms
    result = evaluate(canary, 0.036, T, control=idle_stable, stable_p95_seconds=0.05)
    assert result.outcome is Outcome.FAILED
    assert "2x stable's 50.0 ms in its last window beside the canary" in result.breaches[0].reason


def test_a_recent_stable_p95_below_the_baseline_leaves_the_baseline_in_charge() -> None:
    idle_stable = MetricSample(error_rate=None, p95_seconds=None, requests=0)
    canary = with_latency(1000, 0.0, *SLOW_BOTH)
    result = evaluate(canary, 0.036, T, control=idle_stable, stable_p95_seconds=0.01)
    assert result.outcome is Outcome.FAILED
    assert "pre-deploy baseline 36.0 ms" in result.breaches[0].reason


def test_without_histograms_latency_is_held_against_the_baseline_and_says_why() -> None:
    result = evaluate(MetricSample(0.0, 0.02, 400), BASE, T, control=MetricSample(0.0, 0.02, 400))
    assert result.outcome is Outcome.SUCCESSFUL
    assert "no latency histogram to compare stable with" in result.note


def test_a_failed_stable_query_falls_back_to_the_baseline_never_to_a_pass() -> None:
    broken = MetricSample(None, None, None, error="timeout")
    result = evaluate(MetricSample(0.0, 0.5, 1000), 0.036, T, control=broken)
    assert result.outcome is Outcome.FAILED
    assert result.to_dict()["stable"]["error"] == "timeout"


@settings(max_examples=80)
@given(
    requests=st.floats(20, 1e6),
    fraction=st.floats(0, 1),
    looks=st.integers(1, 50),
)
def test_a_rate_at_or_below_the_maximum_is_never_a_breach_and_above_never_passes(
    requests: float, fraction: float, looks: int
) -> None:
    result = evaluate(MetricSample(fraction, None, requests), None, T, looks=looks)
    if fraction <= T.max_error_rate:
        assert result.outcome is not Outcome.FAILED
    else:
        assert result.outcome is not Outcome.SUCCESSFUL


# -- evidence in proportion to exposure; a stage ends on evidence, then on the spec's rule ------


def test_the_confidence_a_promotion_needs_grows_with_the_traffic_it_puts_at_risk() -> None:
    # The chance of promoting a canary right at a limit, times the share of traffic it then
    # gets, stays within 5%.
    assert exposure_confidence(0.95, 0.25) == pytest.approx(0.80)
    assert exposure_confidence(0.95, 0.50) == pytest.approx(0.90)
    assert exposure_confidence(0.95, 1.00) == pytest.approx(0.95)
    assert exposure_confidence(0.95, 0.05) == pytest.approx(0.50)  # never below the estimate
    with pytest.raises(ValueError, match="exposure"):
        exposure_confidence(0.95, 0.0)


def test_a_stage_to_a_small_exposure_promotes_on_less_evidence() -> None:
    # 1 error in 80 requests: its upper bound clears 5% at 80% but not at 95%.
    sample = MetricSample(error_rate=1 / 80, p95_seconds=0.02, requests=80)
    assert evaluate(sample, BASE, T, exposure=0.25).outcome is Outcome.SUCCESSFUL
    assert evaluate(sample, BASE, T, exposure=1.0).outcome is Outcome.INCONCLUSIVE


def unproven() -> MetricSample:
    # 2 errors in 40 requests (5%): neither below nor above the limit beyond doubt.
    return MetricSample(error_rate=2 / 40, p95_seconds=0.02, requests=40)


def test_not_shown_yet_keeps_observing_however_long_until_the_stage_is_out_of_time() -> None:
    many = [m(unproven())] * 500
    for rule in ("pause", "promote", "rollback"):
        rules = Thresholds(on_inconclusive=rule)  # type: ignore[arg-type]
        assert analyse_stage(many, rules, may_promote=True).verdict is Verdict.CONTINUE


def test_out_of_time_pause_asks_a_person_and_says_why() -> None:
    rules = Thresholds(on_inconclusive="pause")
    look = evaluate(unproven(), BASE, rules)
    decision = analyse_stage([look], rules, may_promote=True, out_of_time=True, time_limit="30 min")
    assert decision.verdict is Verdict.PAUSE
    assert decision.reason is not None
    assert decision.reason.reason.startswith("not shown healthy or harmful within 30 min: ")
    assert "error rate 5.0% over 40 requests" in decision.reason.reason


def test_out_of_time_promote_goes_on_only_on_estimates_within_the_limits() -> None:
    rules = Thresholds(on_inconclusive="promote")
    within = evaluate(MetricSample(1 / 40, 0.02, 40), BASE, rules)
    assert within.outcome is Outcome.INCONCLUSIVE
    assert within.within_limits
    decision = analyse_stage([within], rules, may_promote=True, out_of_time=True)
    assert decision.verdict is Verdict.PROMOTE
    assert decision.note.startswith("promoted on its estimates within the limits")
    above = evaluate(MetricSample(3 / 40, 0.02, 40), BASE, rules)  # 7.5%: not beyond doubt
    assert above.outcome is Outcome.INCONCLUSIVE
    assert not above.within_limits
    decision = analyse_stage([above], rules, may_promote=True, out_of_time=True)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert "error rate 7.5% over 40 requests" in decision.reason.reason
    assert "its estimates are not within the limits" in decision.reason.reason


def test_out_of_time_rollback_says_it_was_the_rule_not_harm() -> None:
    rules = Thresholds(on_inconclusive="rollback")
    look = evaluate(unproven(), BASE, rules)
    decision = analyse_stage([look], rules, may_promote=True, out_of_time=True)
    assert decision.verdict is Verdict.ROLLBACK
    assert decision.reason is not None
    assert decision.reason.metric == "inconclusive"
    assert decision.reason.reason.endswith("on_inconclusive is 'rollback'")


def test_a_canary_shown_healthy_promotes_whatever_the_rule() -> None:
    for rule in ("pause", "promote", "rollback"):
        rules = Thresholds(on_inconclusive=rule)  # type: ignore[arg-type]
        decision = analyse_stage([m(ok())], rules, may_promote=True, out_of_time=True)
        assert decision.verdict is Verdict.PROMOTE


@settings(max_examples=80, deadline=None)
@given(rate=st.floats(0.0, 0.05), requests=st.integers(20, 100_000), looks=st.integers(1, 400))
def test_a_canary_within_the_limit_is_never_rolled_back_before_its_time_is_up(
    rate: float, requests: int, looks: int
) -> None:
    look = evaluate(MetricSample(rate, 0.02, requests), BASE, T, looks=looks)
    decision = analyse_stage([look] * 3, T, may_promote=True)
    assert decision.verdict is not Verdict.ROLLBACK
