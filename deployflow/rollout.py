"""Observing one rollout stage: measure every interval, evaluate, stop as soon as the verdict is in.

The loop is plain Python with an injectable clock so it is tested in milliseconds; the Prefect task
that runs it only adds logging.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
from deployflow.spec import AnalysisSpec


def thresholds_from(analysis: AnalysisSpec) -> Thresholds:
    """The analysis limits the spec asks for."""
    return Thresholds(
        max_error_rate=analysis.max_error_rate,
        max_p95_ratio=analysis.max_p95_ratio,
        min_requests=analysis.min_requests,
        failure_limit=analysis.failure_limit,
        consecutive_error_limit=analysis.consecutive_error_limit,
        max_hold_measurements=analysis.max_hold_measurements,
    )


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

    def last_values(self) -> dict[str, float | None]:
        """Figures of the latest measurement that had data, for reports."""
        for m in reversed(self.measurements):
            if m.outcome in (Outcome.SUCCESSFUL, Outcome.FAILED):
                return {
                    "error_rate": m.sample.error_rate,
                    "p95_seconds": m.sample.p95_seconds,
                    "requests": m.sample.requests,
                }
        return {"error_rate": None, "p95_seconds": None, "requests": None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "weight": self.weight,
            "verdict": self.verdict.value,
            "reason": self.reason.to_dict() if self.reason else None,
            "values": self.last_values(),
            "counts": self.counts,
            "measurements": [m.to_dict() for m in self.measurements],
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }


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
) -> StageResult:
    """Measure ``version`` every interval until the stage promotes or rolls back.

    The first measurement is taken one interval after the weight changed, so it sees traffic at
    the new weight. A failure ends the stage at once; promotion waits for the observe window.
    ``gone`` says why the canary no longer runs (None while it does): a dead canary is a failed
    measurement at once, not "no data" to wait out.
    """
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
        sample = source.sample(version, window_seconds)
        # Asked after sampling, so a canary that died while it was measured is not promoted on
        # the figures it served before.
        why_gone = gone() if gone is not None else None
        if why_gone is not None:
            measurement = canary_gone(why_gone, baseline_p95_seconds)
        else:
            measurement = evaluate(sample, baseline_p95_seconds, thresholds)
        measurements.append(measurement)
        if on_measurement is not None:
            on_measurement(measurement)
        window_complete = clock() - start >= observe_seconds - 1e-9
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
