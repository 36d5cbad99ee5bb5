"""The stage loop with a fake clock: no sleeping, no network."""

from __future__ import annotations

import pytest

from deployflow.analysis import MetricSample, Thresholds, Verdict
from deployflow.rollout import latest_stable_p95, observe_stage, stable_error_rate_bound

pytestmark = pytest.mark.unit

# Enough requests for a clean canary to be shown below 5% at the confidence of one of 8 looks.
HEALTHY = MetricSample(error_rate=0.0, p95_seconds=0.02, requests=1000)
BROKEN = MetricSample(error_rate=0.3, p95_seconds=0.02, requests=100)
EMPTY = MetricSample(error_rate=None, p95_seconds=None, requests=None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Script:
    """Returns the scripted samples in order, then repeats the last one."""

    def __init__(self, *samples: MetricSample) -> None:
        self.samples = list(samples)
        self.calls: list[tuple[str, float]] = []

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        self.calls.append((version, window_seconds))
        return self.samples.pop(0) if len(self.samples) > 1 else self.samples[0]


def observe(source: Script, clock: FakeClock, observe_seconds: float = 60.0):
    return observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=2),
        observe_seconds=observe_seconds,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
    )


def test_healthy_stage_promotes_when_the_window_ends() -> None:
    clock, source = FakeClock(), Script(HEALTHY)
    result = observe(source, clock)
    assert result.verdict is Verdict.PROMOTE
    assert len(result.measurements) == 6  # every 10 s over 60 s
    assert clock.now == pytest.approx(60.0)
    assert source.calls[0] == ("v2", 10.0)  # the stage so far


def test_failure_rolls_back_at_once_without_waiting_for_the_window() -> None:
    clock, source = FakeClock(), Script(HEALTHY, BROKEN)
    result = observe(source, clock)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "error_rate"
    assert clock.now == pytest.approx(20.0)


def test_no_data_holds_past_the_window_then_rolls_back() -> None:
    clock, source = FakeClock(), Script(EMPTY)
    result = observe(source, clock, observe_seconds=30.0)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "inconclusive"
    assert len(result.measurements) == 3 + 2  # the window, then two held measurements


def test_late_data_after_the_window_can_still_promote() -> None:
    clock, source = FakeClock(), Script(EMPTY, EMPTY, EMPTY, HEALTHY)
    result = observe(source, clock, observe_seconds=30.0)
    assert result.verdict is Verdict.PROMOTE
    assert len(result.measurements) == 4


def test_stage_result_reports_the_last_figures() -> None:
    result = observe(Script(HEALTHY), FakeClock(), observe_seconds=10.0)
    assert result.to_dict()["values"] == {"error_rate": 0.0, "p95_seconds": 0.02, "requests": 1000}


def test_a_canary_that_died_fails_the_stage_at_once_instead_of_holding_on_no_data() -> None:
    clock, source = FakeClock(), Script(HEALTHY, EMPTY)
    checks = iter([None, "v2 is no longer running"])
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=2),
        observe_seconds=60.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        gone=lambda: next(checks),
    )
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "canary_down"
    assert result.reason.reason == "v2 is no longer running"
    assert clock.now == pytest.approx(20.0)
    assert len(source.calls) == 1  # a dead canary is not sampled


def test_every_look_measures_stable_over_the_same_growing_window() -> None:
    clock, source = FakeClock(), Script(HEALTHY)
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=2),
        observe_seconds=60.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        control_version="v1",
    )
    assert result.verdict is Verdict.PROMOTE
    # The stage so far, from the moment its weight was set, stable over the same window; once
    # the stage is longer than the 30 s window, that recent window too.
    assert source.calls == [
        ("v2", 10.0), ("v1", 10.0), ("v2", 20.0), ("v1", 20.0), ("v2", 30.0), ("v1", 30.0),
        ("v2", 40.0), ("v1", 40.0), ("v2", 30.0), ("v1", 30.0),
        ("v2", 50.0), ("v1", 50.0), ("v2", 30.0), ("v1", 30.0),
        ("v2", 60.0), ("v1", 60.0), ("v2", 30.0), ("v1", 30.0),
    ]  # fmt: skip
    assert "vs stable 0% over 1,000 requests" in result.explanation
    assert result.to_dict()["explanation"] == result.explanation


def test_a_canary_that_never_gathers_enough_requests_is_not_promoted() -> None:
    # 0 errors in 60 requests: its upper bound stays above 5% at this stage's per-look confidence.
    thin = MetricSample(error_rate=0.0, p95_seconds=0.02, requests=60)
    result = observe(Script(thin), FakeClock(), observe_seconds=30.0)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "inconclusive"
    # Its requests stop growing, so the stage sees it cannot get enough of them before its holds
    # run out: it ends at the look that shows this rather than at the last hold.
    assert "could not show it below 5.0%" in result.reason.reason
    assert len(result.measurements) == 4  # 30 s window and 2 holds would be 5 looks


def test_the_stable_error_rate_comes_from_the_latest_stage_that_saw_stable_with_traffic() -> None:
    stable = MetricSample(error_rate=0.005, p95_seconds=0.02, requests=4000)
    seen = observe(Script(HEALTHY), FakeClock(), observe_seconds=10.0)
    assert stable_error_rate_bound([seen], 0.999) == 0.0  # no control measured: nothing excused
    clock = FakeClock()
    measured = observe_stage(
        Script(HEALTHY, stable),
        version="v2",
        index=1,
        weight=50,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10),
        observe_seconds=10.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        control_version="v1",
    )
    bound = stable_error_rate_bound([seen, measured], 0.999)
    assert 0.005 < bound < 0.01  # above the 0.5% observed: an upper bound, not the point
    # The same stage's stable P95 is what a canary with all the traffic is held against.
    assert latest_stable_p95([measured, seen], 0.05) == 0.02
    assert latest_stable_p95([seen], 0.05) == 0.05  # never measured: the pre-deploy baseline


def test_a_canary_that_died_after_its_last_measurement_is_not_promoted() -> None:
    clock, source = FakeClock(), Script(HEALTHY)
    checks = iter([None, "v2 is no longer running"])
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10),
        observe_seconds=10.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        gone=lambda: next(checks),
    )
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "canary_down"


class LateFault:
    """Healthy for 30 s; then 30% errors, which the stage so far dilutes to 4%."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        if self.clock.now < 40.0:
            return HEALTHY
        if window_seconds <= 30.0:
            return BROKEN
        return MetricSample(error_rate=0.04, p95_seconds=0.02, requests=5000)


def test_a_fault_late_in_a_long_stage_fails_on_the_recent_window() -> None:
    clock = FakeClock()
    result = observe_stage(
        LateFault(clock),
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=2),
        observe_seconds=60.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
    )
    assert result.verdict is Verdict.ROLLBACK
    assert clock.now == pytest.approx(40.0)  # the first look after the fault
    assert result.reason is not None
    assert result.reason.metric == "error_rate"
    assert result.measurements[-1].note.startswith("over the last 30 s: error rate canary 30.0%")


def test_a_canary_that_dies_while_measured_is_not_promoted_on_its_earlier_figures() -> None:
    clock, source = FakeClock(), Script(HEALTHY)
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=2),
        observe_seconds=10.0,  # the first measurement completes the window
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        # The canary dies during its first measurement (its figures were fine until then).
        gone=lambda: "v2 is no longer running" if source.calls else None,
    )
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "canary_down"


class Steady:
    """A canary and stable at steady traffic: the requests in a window grow with its length."""

    def __init__(self, canary_rps: float, canary_error_rate: float) -> None:
        self.canary_rps = canary_rps
        self.canary_error_rate = canary_error_rate

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        if version == "v1":
            return MetricSample(0.005, 0.02, 20 * self.canary_rps * window_seconds)
        return MetricSample(self.canary_error_rate, 0.02, self.canary_rps * window_seconds)


def observe_steady(source: Steady, max_hold: int = 5):
    clock = FakeClock()
    result = observe_stage(
        source,
        version="v2",
        control_version="v1",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, max_hold_measurements=max_hold),
        observe_seconds=6.0,
        interval_seconds=2.0,
        window_seconds=6.0,
        clock=clock,
        sleep=clock.sleep,
    )
    return result, clock.now


def test_a_six_percent_canary_ends_the_stage_once_it_cannot_be_shown_below_five() -> None:
    # 30 canary requests/s: 6% can neither be shown above 5% nor below it within the stage's
    # 16 s (8 looks); the stage ends at the look that shows it never will, not at the last hold.
    result, seconds = observe_steady(Steady(30, 0.06))
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "inconclusive"
    assert "could not show it below 5.0%" in result.reason.reason
    assert 4.0 <= seconds <= 6.0


@pytest.mark.parametrize(("rate", "max_hold"), [(0.005, 5), (0.03, 30)])
def test_a_canary_that_can_still_be_shown_healthy_keeps_its_stage(
    rate: float, max_hold: int
) -> None:
    # 0.5% is shown below 5% at the end of the window; 3% at 30 canary requests/s needs about
    # 30 s, which 30 holds give it (futility must not cut it short).
    result, seconds = observe_steady(Steady(30, rate), max_hold=max_hold)
    assert result.verdict is Verdict.PROMOTE
    if rate < 0.01:
        assert seconds == pytest.approx(6.0)


def test_the_first_look_never_ends_a_stage_for_futility() -> None:
    # At the first look the requests so far can undercount the rate by a scrape interval, so they
    # do not predict the stage's total; a look that shows nothing decisive keeps observing.
    result, _ = observe_steady(Steady(30, 0.08), max_hold=0)
    assert len(result.measurements) >= 2
