"""Canary analysis: turn metric samples into measurements, and measurements into a stage verdict.

Everything here is a pure function of data, in the manner of Argo Rollouts' AnalysisRun:
``evaluate`` classifies one sample as Successful / Failed / Inconclusive / Error, and
``analyse_stage`` applies the limits (failures, consecutive errors, holds) to decide whether the
stage promotes, keeps observing, or rolls back. Missing data never promotes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    """How one measurement came out."""

    SUCCESSFUL = "successful"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"


class Verdict(StrEnum):
    """What a stage does next."""

    CONTINUE = "continue"  # keep observing
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Thresholds:
    """Limits the analysis applies; built from the spec's ``analysis`` section."""

    max_error_rate: float = 0.05
    max_p95_ratio: float = 2.0
    min_requests: float = 20
    failure_limit: int = 0
    consecutive_error_limit: int = 3
    max_hold_measurements: int = 3


@dataclass(frozen=True)
class MetricSample:
    """What the metrics backend returned for one version over one window.

    ``None`` means "no data" (empty result or NaN); ``error`` is set when the query itself failed.
    """

    error_rate: float | None
    p95_seconds: float | None
    requests: float | None
    error: str | None = None


@dataclass(frozen=True)
class Breach:
    """A threshold a measurement crossed, with the figures that prove it."""

    metric: str
    value: float | None
    threshold: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """One evaluated sample."""

    outcome: Outcome
    sample: MetricSample
    baseline_p95_seconds: float | None
    breaches: tuple[Breach, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "error_rate": self.sample.error_rate,
            "p95_seconds": self.sample.p95_seconds,
            "requests": self.sample.requests,
            "baseline_p95_seconds": self.baseline_p95_seconds,
            "error": self.sample.error,
            "breaches": [b.to_dict() for b in self.breaches],
            "note": self.note,
        }


@dataclass(frozen=True)
class StageDecision:
    """The verdict for a stage so far, and why."""

    verdict: Verdict
    reason: Breach | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _clean(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


def evaluate(
    sample: MetricSample, baseline_p95_seconds: float | None, thresholds: Thresholds
) -> Measurement:
    """Classify one sample of the canary against the thresholds and the stable baseline."""
    if sample.error is not None:
        return Measurement(Outcome.ERROR, sample, baseline_p95_seconds, note=sample.error)
    requests = _clean(sample.requests)
    if requests is None or requests < thresholds.min_requests:
        seen = "no" if requests is None else f"{requests:.0f}"
        note = f"{seen} requests in the window, fewer than the minimum {thresholds.min_requests:g}"
        return Measurement(Outcome.INCONCLUSIVE, sample, baseline_p95_seconds, note=note)

    breaches: list[Breach] = []
    error_rate = _clean(sample.error_rate)
    if error_rate is None:
        note = "error rate has no data although requests were counted"
        return Measurement(Outcome.INCONCLUSIVE, sample, baseline_p95_seconds, note=note)
    if error_rate > thresholds.max_error_rate:
        breaches.append(
            Breach(
                "error_rate",
                error_rate,
                thresholds.max_error_rate,
                f"error rate {error_rate:.2%} above the maximum {thresholds.max_error_rate:.2%}",
            )
        )

    p95 = _clean(sample.p95_seconds)
    if baseline_p95_seconds is not None and baseline_p95_seconds > 0:
        limit = thresholds.max_p95_ratio * baseline_p95_seconds
        if p95 is None:
            if not breaches:
                note = "P95 latency has no data although requests were counted"
                return Measurement(Outcome.INCONCLUSIVE, sample, baseline_p95_seconds, note=note)
        elif p95 > limit:
            breaches.append(
                Breach(
                    "p95_latency",
                    p95,
                    limit,
                    f"P95 latency {p95 * 1000:.1f} ms above {thresholds.max_p95_ratio:g}x the "
                    f"baseline {baseline_p95_seconds * 1000:.1f} ms ({limit * 1000:.1f} ms)",
                )
            )
    if breaches:
        return Measurement(Outcome.FAILED, sample, baseline_p95_seconds, tuple(breaches))
    return Measurement(Outcome.SUCCESSFUL, sample, baseline_p95_seconds)


def _counts(measurements: list[Measurement]) -> dict[str, int]:
    counts = {outcome.value: 0 for outcome in Outcome}
    for m in measurements:
        counts[m.outcome.value] += 1
    return counts


def _trailing(measurements: list[Measurement], outcome: Outcome) -> int:
    run = 0
    for m in reversed(measurements):
        if m.outcome is not outcome:
            break
        run += 1
    return run


def analyse_stage(
    measurements: list[Measurement],
    thresholds: Thresholds,
    *,
    window_complete: bool,
    held: int = 0,
) -> StageDecision:
    """Decide what a stage does after its latest measurement.

    Args:
        measurements: every measurement of this stage so far, oldest first.
        thresholds: the limits.
        window_complete: the stage's observe duration has elapsed.
        held: measurements already taken after the window ended because the last one was not
            successful; past ``max_hold_measurements`` the stage rolls back.

    A stage promotes only when its window is complete and its latest measurement is successful.
    """
    counts = _counts(measurements)
    failed = [m for m in measurements if m.outcome is Outcome.FAILED]
    if len(failed) > thresholds.failure_limit:
        return StageDecision(Verdict.ROLLBACK, failed[-1].breaches[0], counts)

    errors = _trailing(measurements, Outcome.ERROR)
    if errors > thresholds.consecutive_error_limit:
        last = measurements[-1]
        reason = Breach(
            "metrics",
            None,
            None,
            f"{errors} consecutive metric queries failed (limit "
            f"{thresholds.consecutive_error_limit}): {last.note}",
        )
        return StageDecision(Verdict.ROLLBACK, reason, counts)

    if not window_complete:
        return StageDecision(Verdict.CONTINUE, None, counts)

    if measurements and measurements[-1].outcome is Outcome.SUCCESSFUL:
        return StageDecision(Verdict.PROMOTE, None, counts)

    if held < thresholds.max_hold_measurements:
        return StageDecision(Verdict.CONTINUE, None, counts)

    last_note = measurements[-1].note if measurements else "no measurement was taken"
    reason = Breach(
        "inconclusive",
        None,
        None,
        f"the stage could not be shown healthy after {held} extra measurements: {last_note}",
    )
    return StageDecision(Verdict.ROLLBACK, reason, counts)
