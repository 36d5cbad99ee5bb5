"""The stage loop with a fake clock: no sleeping, no network."""

from __future__ import annotations

import pytest

from deployflow.analysis import MetricSample, Thresholds, Verdict
from deployflow.rollout import (
    StageResult,
    exposure_after,
    looks_in_stage,
    observe_stage,
    promotion_times,
    stable_error_rate_bound,
    stable_p95_beside,
)

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


# Unproven at the end of its time, the stage rolls back: the rule these loop tests follow.
UNPROVEN_ROLLS_BACK = Thresholds(min_requests=10, on_inconclusive="rollback")


def observe(source: Script, clock: FakeClock, observe_seconds: float = 60.0):
    return observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=UNPROVEN_ROLLS_BACK,
        observe_seconds=observe_seconds,
        max_seconds=observe_seconds + 20.0,  # two looks past the observe time
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


def test_no_data_keeps_observing_past_the_window_then_follows_the_rule() -> None:
    clock, source = FakeClock(), Script(EMPTY)
    result = observe(source, clock, observe_seconds=30.0)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "inconclusive"
    assert result.reason.reason.startswith("not shown healthy or harmful within 50 s: no requests")
    assert len(result.measurements) == 3 + 2  # the window, then up to its maximum duration


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
        thresholds=UNPROVEN_ROLLS_BACK,
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
        thresholds=UNPROVEN_ROLLS_BACK,
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
    assert "stable 0% over 1,000 requests" in result.explanation
    assert result.to_dict()["explanation"] == result.explanation


def test_a_canary_that_never_gathers_enough_requests_is_not_promoted() -> None:
    # 0 errors in 25 requests: its upper bound stays above 5% at this stage's per-look confidence.
    thin = MetricSample(error_rate=0.0, p95_seconds=0.02, requests=25)
    result = observe(Script(thin), FakeClock(), observe_seconds=30.0)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "inconclusive"
    assert "error rate 0% over 25 requests, not yet shown below the 5.0% limit" in (
        result.reason.reason
    )
    assert result.reason.reason.endswith("on_inconclusive is 'rollback'")
    assert len(result.measurements) == 5  # observed to its maximum duration, never cut short


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


def test_stables_p95_beside_the_canary_is_the_latest_with_enough_requests() -> None:
    def stage_with(*stable: MetricSample) -> StageResult:
        clock = FakeClock()
        samples: list[MetricSample] = []
        for s in stable:
            samples += [HEALTHY, s]
        return observe_stage(
            Script(*samples),
            version="v2",
            index=1,
            weight=50,
            baseline_p95_seconds=0.02,
            thresholds=Thresholds(min_requests=10),
            observe_seconds=10.0 * len(stable),
            interval_seconds=10.0,
            window_seconds=30.0,
            clock=clock,
            sleep=clock.sleep,
            control_version="v1",
        )

    busy = MetricSample(error_rate=0.0, p95_seconds=0.06, requests=400)
    thin = MetricSample(error_rate=0.0, p95_seconds=0.5, requests=3)  # too few to stand for it
    earlier = stage_with(MetricSample(error_rate=0.0, p95_seconds=0.02, requests=400))
    later = stage_with(busy, thin)
    assert stable_p95_beside([earlier, later], 10) == pytest.approx(0.06)
    assert stable_p95_beside([earlier], 10) == pytest.approx(0.02)
    alone = observe(Script(HEALTHY), FakeClock(), observe_seconds=10.0)  # no stable measured
    assert stable_p95_beside([alone], 10) is None


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
        thresholds=UNPROVEN_ROLLS_BACK,
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
    assert result.measurements[-1].note.startswith("over the last 30 s: error rate 30.0%")


def test_a_canary_that_dies_while_measured_is_not_promoted_on_its_earlier_figures() -> None:
    clock, source = FakeClock(), Script(HEALTHY)
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=UNPROVEN_ROLLS_BACK,
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


def observe_steady(
    source: Steady, rule: str = "pause", observe_seconds: float = 6.0, max_seconds: float = 60.0
):
    clock = FakeClock()
    result = observe_stage(
        source,
        version="v2",
        control_version="v1",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, on_inconclusive=rule),  # type: ignore[arg-type]
        observe_seconds=observe_seconds,
        max_seconds=max_seconds,
        exposure=0.25,
        interval_seconds=2.0,
        window_seconds=6.0,
        clock=clock,
        sleep=clock.sleep,
    )
    return result, clock.now


def test_a_six_percent_canary_is_neither_promoted_nor_called_harmful_and_a_person_decides() -> None:
    # 3 canary requests/s: 6% can neither be shown above 5% nor below it within 60 s.
    result, seconds = observe_steady(Steady(3, 0.06))
    assert result.verdict is Verdict.PAUSE
    assert seconds == pytest.approx(60.0)
    assert result.reason is not None
    assert result.reason.reason.startswith("not shown healthy or harmful within 1 min: error rate")
    assert result.reason.reason.endswith("; a person decides")


@pytest.mark.parametrize("rate", [0.0, 0.005, 0.03])
def test_a_canary_within_the_limit_at_low_traffic_is_promoted_once_shown_not_rolled_back(
    rate: float,
) -> None:
    # 3 canary requests/s (5% of 60/s), going to 25%: evidence gathers past the observe time
    # until the canary is shown below 5% at 80%; nothing is rolled back meanwhile.
    result, seconds = observe_steady(Steady(3, rate), max_seconds=600.0)
    assert result.verdict is Verdict.PROMOTE
    assert 6.0 <= seconds < 600.0
    if rate == 0.0:
        assert seconds <= 40.0


def test_twenty_percent_errors_at_low_traffic_roll_back_within_seconds() -> None:
    result, seconds = observe_steady(Steady(3, 0.2), max_seconds=1800.0)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "error_rate"
    assert seconds <= 30.0


def test_the_looks_of_a_stage_and_the_exposure_of_its_promotion() -> None:
    # 10 min observed, up to 30 min, every 30 s: 60 looks, 6 of which may promote.
    assert promotion_times(600.0, 1800.0) == pytest.approx(
        [600, 750, 937.5, 1171.875, 1464.84375, 1800]
    )
    assert looks_in_stage(600.0, 1800.0, 30.0) == (60, 6)
    assert looks_in_stage(600.0, 600.0, 30.0) == (20, 1)
    assert [exposure_after([5, 25, 50, 100], i) for i in range(4)] == [0.25, 0.5, 1.0, 1.0]


class SlowScript(Script):
    """A metrics backend that answers correctly, but only after ``delay`` real seconds."""

    def __init__(self, delay: float, *samples: MetricSample) -> None:
        super().__init__(*samples)
        self.delay = delay

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        import time

        time.sleep(self.delay)  # the backend's slowness, which the look must not wait out
        return super().sample(version, window_seconds)


def test_a_look_slower_than_its_share_of_the_interval_is_an_error_on_time() -> None:
    """Prometheus answering slowly (under its own timeout) does not stretch the stage: each look
    that outlasts its deadline is an error measurement, and errors past the limit roll back."""
    clock, source = FakeClock(), SlowScript(0.5, HEALTHY)
    result = observe_stage(
        source,
        version="v2",
        index=0,
        weight=5,
        baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10, consecutive_error_limit=2),
        observe_seconds=60.0,
        interval_seconds=10.0,
        window_seconds=30.0,
        clock=clock,
        sleep=clock.sleep,
        query_seconds=0.05,
    )
    assert result.verdict is Verdict.ROLLBACK
    assert len(result.measurements) == 3  # consecutive_error_limit 2: the third error decides
    assert all(m.outcome.value == "error" for m in result.measurements)
    assert "did not answer within 0.05 s" in result.measurements[0].note
    assert clock.now == pytest.approx(30.0)  # on the interval's schedule


def test_a_look_deadline_is_half_the_interval_and_never_under_a_second() -> None:
    from deployflow.rollout import query_deadline

    assert query_deadline(10.0) == 5.0
    assert query_deadline(0.005) == 1.0
