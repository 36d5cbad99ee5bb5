"""Observing one rollout stage: measure every interval, evaluate, stop as soon as the verdict is in.

The loop is plain Python with an injectable clock so it is tested in milliseconds; the Prefect task
that runs it only adds logging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from deployflow.analysis import (
    Breach,
    Measurement,
    MetricSample,
    Outcome,
    Thresholds,
    Verdict,
    analyse_stage,
    evaluate,
)
from deployflow.providers.base import Metrics
from deployflow.signals import SignalProbe, with_signals
from deployflow.spec import AnalysisSpec
from deployflow.stats import Histogram, wilson_bounds


def thresholds_from(analysis: AnalysisSpec) -> Thresholds:
    """The analysis limits the spec asks for."""
    return Thresholds(
        max_error_rate=analysis.max_error_rate,
        max_p95_ratio=analysis.max_p95_ratio,
        min_requests=analysis.min_requests,
        failure_limit=analysis.failure_limit,
        consecutive_error_limit=analysis.consecutive_error_limit,
        max_hold_measurements=analysis.max_hold_measurements,
        confidence=analysis.confidence,
        promote_confidence=analysis.promote_confidence,
    )


def looks_in_stage(observe_seconds: float, interval_seconds: float, max_hold: int) -> int:
    """The most measurements a stage can take: one per interval over the observe time, then the
    held ones. The stage's false-alarm budget is spread over this many looks."""
    return max(1, math.ceil(observe_seconds / interval_seconds - 1e-9)) + max_hold


@dataclass
class StageResult:
    """What happened in one stage."""

    index: int
    weight: int
    verdict: Verdict
    measurements: list[Measurement]
    reason: Breach | None
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    # What was observed, when it is not a canary at ``weight`` ("green in isolation", a flag step).
    label: str = ""

    @property
    def observed(self) -> str:
        """What the stage observed, in words: its label, else "25% canary"."""
        return self.label or f"{self.weight}% canary"

    def last_values(self) -> dict[str, float | None]:
        """Figures of the latest measurement that had data, for reports (an inconclusive one
        too: a stage stopped early for too little evidence still shows what it saw)."""
        for m in reversed(self.measurements):
            if m.sample.error is None and m.sample.requests is not None:
                return {
                    "error_rate": m.sample.error_rate,
                    "p95_seconds": m.sample.p95_seconds,
                    "requests": m.sample.requests,
                }
        return {"error_rate": None, "p95_seconds": None, "requests": None}

    @property
    def explanation(self) -> str:
        """Why the stage ended as it did, in figures a person can check."""
        if self.reason is not None:
            return self.reason.reason
        return self.measurements[-1].note if self.measurements else ""

    def stable_p95_seconds(self) -> float | None:
        """The stable version's P95 over the latest window this stage compared the canary with
        (None when stable had no usable traffic)."""
        for m in reversed(self.measurements):
            control = m.control
            if control is None or control.error is not None or not control.requests:
                continue
            if control.buckets:
                p95 = Histogram.from_cumulative(list(control.buckets)).quantile(0.95)
            else:
                p95 = control.p95_seconds
            if p95 is not None and math.isfinite(p95) and p95 > 0:
                return p95
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "weight": self.weight,
            "observed": self.observed,
            "verdict": self.verdict.value,
            "reason": self.reason.to_dict() if self.reason else None,
            "values": self.last_values(),
            "explanation": self.explanation,
            "counts": self.counts,
            "measurements": [m.to_dict() for m in self.measurements],
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }


def next_baseline(baseline_p95_seconds: float | None, result: StageResult) -> float | None:
    """The stable P95 the next stage falls back on when stable has no traffic to compare with
    (the last stage at 100%): the stable's P95 measured alongside this stage, which saw the
    same conditions (load, time of day) the next stage will, else the pre-deploy baseline."""
    return result.stable_p95_seconds() or baseline_p95_seconds


def latest_stable_p95(stages: Sequence[StageResult], baseline: float | None) -> float | None:
    """The stable P95 measured alongside the latest stage that saw stable with traffic, else
    ``baseline`` (the pre-deploy one): what a canary with all the traffic is held against."""
    for stage in reversed(stages):
        p95 = stage.stable_p95_seconds()
        if p95 is not None:
            return p95
    return baseline


def stable_error_rate_bound(stages: Sequence[StageResult], confidence: float) -> float:
    """The highest error rate the stable version plausibly has, from the latest measurement that
    saw it with traffic: the upper end of its Wilson interval at ``confidence`` (one-sided).
    0 when no measurement did (a first release, metrics down): then nothing is excused."""
    for stage in reversed(stages):
        for m in reversed(stage.measurements):
            c = m.control
            if c is None or c.error is not None or c.error_rate is None or not c.requests:
                continue
            if not (math.isfinite(c.error_rate) and math.isfinite(c.requests)):
                continue
            return wilson_bounds(c.error_rate * c.requests, c.requests, 0.5, confidence).high
    return 0.0


def canary_gone(reason: str, baseline_p95_seconds: float | None) -> Measurement:
    """The measurement of a canary that no longer runs: failed, whatever the metrics say."""
    breach = Breach("canary_down", None, None, reason)
    return Measurement(
        Outcome.FAILED, MetricSample(None, None, None), baseline_p95_seconds, (breach,), reason
    )


def observe_stage(
    source: Metrics,
    *,
    version: str,
    index: int,
    weight: int,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    observe_seconds: float,
    interval_seconds: float,
    window_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_measurement: Callable[[Measurement], None] | None = None,
    gone: Callable[[], str | None] | None = None,
    control_version: str | None = None,
    signals: Sequence[SignalProbe] = (),
) -> StageResult:
    """Measure ``version`` every interval until the stage promotes or rolls back.

    The first measurement is taken one interval after the weight changed, so it sees traffic at
    the new weight. A failure ends the stage at once; promotion waits for the observe window.
    ``gone`` says why the canary no longer runs (None while it does): a dead canary is a failed
    measurement at once, not "no data" to wait out, and is asked again before a promotion.

    Every measurement compares ``version`` with ``control_version`` (the stable version, None on
    a first release) measured over the same window, so load that slows both is not blamed on the
    canary. Each look covers the stage so far, from the moment its weight was set: evidence
    accumulates, traffic from an earlier weight never mixes in (which would compare a canary
    mostly seen at the new weight with a stable mostly seen at the old one), and the confidence
    of each look is set so that all the looks of the stage together keep the stated confidence.
    Once the stage is longer than ``window_seconds``, each look also checks that recent window
    alone, which only ever fails a stage (a fault that starts late shows there at once).

    ``signals`` (the logs, the alerts; already bound to the version) are asked at every look and
    folded into its measurement: the worst outcome counts (``deployflow.signals.with_signals``).
    """
    looks = looks_in_stage(observe_seconds, interval_seconds, thresholds.max_hold_measurements)
    # A stage longer than the window also checks the recent window at each look, so a fault that
    # starts mid-stage is not diluted by the healthy traffic before it; the budget covers both.
    recent_too = window_seconds < looks * interval_seconds - 1e-9
    tests = 2 * looks if recent_too else looks
    horizon = looks * interval_seconds  # the stage's last look, held to the end
    started_at = datetime.now(UTC)
    start = clock()
    measurements: list[Measurement] = []
    held = 0
    next_tick = start + interval_seconds
    while True:
        delay = next_tick - clock()
        if delay > 0:
            sleep(delay)  # pacing between measurements, not synchronisation
        next_tick += interval_seconds
        why_gone = gone() if gone is not None else None
        if why_gone is not None:
            measurement = canary_gone(why_gone, baseline_p95_seconds)
        else:
            window = max(clock() - start, interval_seconds)

            def measure(seconds: float, final: float | None = None) -> Measurement:
                sample = source.sample(version, seconds)
                control = None
                if control_version is not None:
                    control = source.sample(control_version, seconds)
                requests = sample.requests
                final_requests = None
                if final is not None and requests is not None and math.isfinite(requests):
                    final_requests = requests * final
                return evaluate(
                    sample,
                    baseline_p95_seconds,
                    thresholds,
                    control=control,
                    looks=tests,
                    final_requests=final_requests,
                )

            # From the second look on, the requests seen so far tell how many the stage will
            # have by its last look (traffic is steady within a stage); the first look can
            # undercount by a scrape interval.
            final = horizon / window if window >= 2 * interval_seconds - 1e-9 else None
            measurement = measure(window, final)
            requests = measurement.sample.requests
            if recent_too and window > window_seconds + 1e-9:
                recent = measure(window_seconds)
                if recent.outcome is Outcome.FAILED and measurement.outcome is not Outcome.FAILED:
                    measurement = replace(
                        recent, note=f"over the last {window_seconds:g} s: {recent.note}"
                    )
            if signals:
                elapsed = clock() - start
                measurement = with_signals(
                    measurement, [probe(elapsed, requests) for probe in signals]
                )
        measurements.append(measurement)
        if on_measurement is not None:
            on_measurement(measurement)
        window_complete = clock() - start >= observe_seconds - 1e-9
        decision = analyse_stage(
            measurements, thresholds, window_complete=window_complete, held=held
        )
        if decision.verdict is Verdict.PROMOTE and gone is not None:
            # Metrics lag: a canary that died since it was measured must not be promoted.
            why_gone = gone()
            if why_gone is not None:
                measurements.append(canary_gone(why_gone, baseline_p95_seconds))
                decision = analyse_stage(
                    measurements, thresholds, window_complete=window_complete, held=held
                )
        if decision.verdict is not Verdict.CONTINUE:
            return StageResult(
                index=index,
                weight=weight,
                verdict=decision.verdict,
                measurements=measurements,
                reason=decision.reason,
                started_at=started_at,
                finished_at=datetime.now(UTC),
                counts=decision.counts,
            )
        if window_complete:
            held += 1
