"""Canary analysis: turn metric samples into measurements, and measurements into a stage verdict.

Everything here is a pure function of data, in the manner of Argo Rollouts' AnalysisRun:
``evaluate`` classifies one sample as Successful / Failed / Inconclusive / Error, weighing the
evidence the sample size allows (``deployflow.stats``) and comparing the canary with the stable
version over the same window (Kayenta's concurrent control), and
``analyse_stage`` applies the limits (failures, consecutive errors, holds) to decide whether the
stage promotes, keeps observing, or rolls back. Missing data never promotes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal

from deployflow.stats import (
    Histogram,
    best_final_upper_bound,
    mann_whitney,
    per_look_confidence,
    wilson_bounds,
)


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
    # The chance, per stage, that a healthy canary is not failed by luck (spent over its looks).
    confidence: float = 0.999
    # The chance, per stage, that a canary right at a maximum is not promoted (spent over the
    # looks that may promote: the last of the window and the held ones).
    promote_confidence: float = 0.95


@dataclass(frozen=True)
class MetricSample:
    """What the metrics backend returned for one version over one window.

    ``None`` means "no data" (empty result or NaN); ``error`` is set when the query itself failed.
    ``buckets`` is the latency histogram over the window as Prometheus gives it, (upper bound in
    seconds, cumulative count) pairs, the last bound ``inf``; empty when the backend has none.
    """

    error_rate: float | None
    p95_seconds: float | None
    requests: float | None
    error: str | None = None
    buckets: tuple[tuple[float, float], ...] = ()


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
    control: MetricSample | None = None  # the stable version over the same window
    # What other signals saw (log lines matching the error patterns, firing alerts).
    evidence: tuple[str, ...] = ()
    # Why the stage cannot show this canary healthy by its last look, however long it observes
    # (empty while it still can): the stage ends at once (``analyse_stage``).
    hopeless: str = ""

    def to_dict(self) -> dict[str, Any]:
        control = self.control
        return {
            "outcome": self.outcome.value,
            "error_rate": self.sample.error_rate,
            "p95_seconds": self.sample.p95_seconds,
            "requests": self.sample.requests,
            "baseline_p95_seconds": self.baseline_p95_seconds,
            "error": self.sample.error,
            "breaches": [b.to_dict() for b in self.breaches],
            "note": self.note,
            "evidence": list(self.evidence),
            "hopeless": self.hopeless,
            "stable": None
            if control is None
            else {
                "error_rate": control.error_rate,
                "p95_seconds": control.p95_seconds,
                "requests": control.requests,
                "error": control.error,
            },
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


def _rate(value: float) -> str:
    """A rate as people read it: 6.4%, 0.52%, 0%."""
    if value == 0:
        return "0%"
    return f"{value:.2%}" if value < 0.01 else f"{value:.1%}"


def _span(low: float, high: float) -> str:
    """An interval of rates, one percent sign: 5.3-7.6%, 0.01-0.62%."""
    digits = 2 if high < 0.01 else 1
    return f"{low * 100:.{digits}f}-{high * 100:.{digits}f}%"


def _p(p_value: float) -> str:
    return "p<1e-6" if p_value < 1e-6 else f"p={p_value:.2g}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _requests(count: float) -> str:
    return f"{count:,.0f} requests"


def _usable(sample: MetricSample | None, thresholds: Thresholds) -> MetricSample | None:
    """The control sample when it can be compared with: answered, with enough requests."""
    if sample is None or sample.error is not None:
        return None
    requests = _clean(sample.requests)
    if requests is None or requests < thresholds.min_requests:
        return None
    return sample


@dataclass(frozen=True)
class _Finding:
    """One metric's verdict: ``above`` (a breach), ``below`` (healthy) or ``undecided``."""

    state: Literal["above", "below", "undecided"]
    text: str
    breach: Breach | None = None
    hopeless: str = ""  # an undecided finding the stage's remaining looks cannot decide "below"


def _judge_error_rate(
    requests: float,
    error_rate: float,
    control: MetricSample | None,
    thresholds: Thresholds,
    levels: tuple[float, float],
    final_requests: float | None = None,
) -> _Finding:
    limit = thresholds.max_error_rate
    errors = error_rate * requests
    ci = wilson_bounds(errors, requests, *levels)
    level = ci.confidence
    text = (
        f"canary {_rate(ci.estimate)} ({level * 100:.4g}% CI {_span(ci.low, ci.high)}) "
        f"over {_requests(requests)}"
    )
    control_rate = _clean(control.error_rate) if control is not None else None
    if control is not None and control_rate is not None and control.requests is not None:
        text += f" vs stable {_rate(control_rate)} over {_requests(control.requests)}"
    else:
        text += " (no stable traffic to compare with)"
    if ci.low > limit:
        reason = f"error rate {text}: above {_rate(limit)}"
        return _Finding("above", reason, Breach("error_rate", error_rate, limit, reason))
    if ci.high < limit or (limit == 0.0 and errors == 0.0):
        return _Finding("below", f"error rate {text}: below {_rate(limit)}")
    undecided = f"error rate {text}: cannot be told apart from {_rate(limit)} yet"
    if final_requests is None or final_requests <= requests:
        return _Finding("undecided", undecided)
    # Futility: even if the canary is as good as these requests plausibly allow, the requests
    # the stage will have seen by its last look cannot show it below the maximum.
    plausible, best = best_final_upper_bound(errors, requests, final_requests, levels[1], levels[1])
    if best < limit:
        return _Finding("undecided", undecided)
    if plausible > limit:
        # Above the maximum at the promotion confidence, and no time left to show otherwise: an
        # error-rate rollback (a canary at or below the maximum is never this far above it).
        reason = (
            f"error rate {text}: above {_rate(limit)} (at least {_rate(plausible)} at the "
            f"promotion confidence), and the {_requests(final_requests)} expected by the "
            "stage's last look could not show it below"
        )
        return _Finding("above", reason, Breach("error_rate", error_rate, limit, reason))
    hopeless = (
        f"error rate {text}: even at {_rate(plausible)}, the lowest rate these requests "
        f"plausibly allow, the {_requests(final_requests)} expected by the stage's last look "
        f"could not show it below {_rate(limit)} (upper bound {_rate(best)})"
    )
    return _Finding("undecided", undecided, hopeless=hopeless)


def _judge_latency_concurrent(
    canary: Histogram, stable: Histogram, thresholds: Thresholds, level: float
) -> _Finding | None:
    """P95 ratio and rank test of canary against stable over the same window; None when the
    histograms cannot be compared."""
    if canary.total < thresholds.min_requests or stable.total < thresholds.min_requests:
        return None
    try:
        test = mann_whitney(canary, stable)
    except ValueError:
        return None
    p95_canary, p95_stable = canary.quantile(0.95), stable.quantile(0.95)
    if p95_canary is None or p95_stable is None or p95_stable <= 0:
        return None
    ratio = p95_canary / p95_stable
    limit = thresholds.max_p95_ratio
    text = (
        f"P95 canary {_ms(p95_canary)} vs stable {_ms(p95_stable)} in the same window "
        f"({ratio:.2f}x; rank test {_p(test.p_value)}, "
        f"P(canary slower)={test.probability:.2f})"
    )
    alpha = 1.0 - level
    if ratio > limit and test.p_value < alpha:
        reason = f"{text}: above {limit:g}x"
        return _Finding(
            "above", reason, Breach("p95_latency", p95_canary, limit * p95_stable, reason)
        )
    if ratio <= limit:
        return _Finding("below", f"{text}: within {limit:g}x")
    return _Finding("undecided", f"{text}: above {limit:g}x but not beyond chance yet")


def _judge_latency_baseline(
    sample: MetricSample,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    level: float,
    why: str,
) -> _Finding | None:
    """The second guard, when no stable traffic can be compared with: the canary's P95 against
    the stable P95 measured before the deploy. With a histogram, a breach needs the lower bound
    of the P95 above the limit, not one point. None when there is no baseline."""
    if baseline_p95_seconds is None or baseline_p95_seconds <= 0:
        return None
    limit = thresholds.max_p95_ratio * baseline_p95_seconds
    histogram = Histogram.from_cumulative(list(sample.buckets)) if sample.buckets else None
    p95 = _clean(sample.p95_seconds)
    if p95 is None and histogram is not None:
        p95 = histogram.quantile(0.95)
    if p95 is None:
        return _Finding("undecided", "P95 latency has no data although requests were counted")
    bounds = histogram.quantile_bounds(0.95, level) if histogram is not None else None
    lowest = bounds[0] if bounds is not None else p95
    shown = f"P95 {_ms(p95)}" + (f" (at least {_ms(lowest)})" if bounds is not None else "")
    text = (
        f"{shown} against {thresholds.max_p95_ratio:g}x the pre-deploy baseline "
        f"{_ms(baseline_p95_seconds)} ({_ms(limit)}; {why})"
    )
    if lowest > limit:
        reason = f"P95 latency above the limit: {text}"
        return _Finding("above", reason, Breach("p95_latency", p95, limit, reason))
    if p95 > limit:
        return _Finding("undecided", f"{text}: above the limit but not beyond chance yet")
    return _Finding("below", text)


def evaluate(
    sample: MetricSample,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    *,
    control: MetricSample | None = None,
    looks: int = 1,
    final_requests: float | None = None,
) -> Measurement:
    """Classify one sample of the canary, against the stable version's sample from the same
    window (``control``) and, when stable had no traffic, the pre-deploy baseline.

    The error rate fails only when the lower bound of its confidence interval is above the
    maximum (at ``thresholds.confidence``) and succeeds only when the upper bound is below it (at
    ``thresholds.promote_confidence``); the latency fails only when the
    canary's P95 is above ``max_p95_ratio`` times the stable's *and* a rank test on the two
    histograms says the canary is slower beyond chance. Anything in between is inconclusive.
    ``looks`` is how many measurements the stage may take: each is held to the confidence that
    keeps the whole stage at ``thresholds.confidence``. ``final_requests`` is how many requests
    the canary is expected to have served by the stage's last look: when even a canary as good
    as the sample plausibly allows could not be shown below the maximum error rate by then, the
    measurement says so (``hopeless``) and the stage ends without waiting for its holds.
    """
    if sample.error is not None:
        return Measurement(
            Outcome.ERROR, sample, baseline_p95_seconds, note=sample.error, control=control
        )
    requests = _clean(sample.requests)
    if requests is None or requests < thresholds.min_requests:
        seen = "no" if requests is None else f"{requests:.0f}"
        note = f"{seen} requests in the window, fewer than the minimum {thresholds.min_requests:g}"
        return Measurement(
            Outcome.INCONCLUSIVE, sample, baseline_p95_seconds, note=note, control=control
        )
    error_rate = _clean(sample.error_rate)
    if error_rate is None:
        note = "error rate has no data although requests were counted"
        return Measurement(
            Outcome.INCONCLUSIVE, sample, baseline_p95_seconds, note=note, control=control
        )

    # One-sided levels: rollbacks spend their budget over every look of the stage, promotions
    # over the looks that may promote.
    level = per_look_confidence(thresholds.confidence, looks)
    promotion_looks = min(looks, thresholds.max_hold_measurements + 1)
    promote_level = per_look_confidence(thresholds.promote_confidence, promotion_looks)
    usable_control = _usable(control, thresholds)
    findings = [
        _judge_error_rate(
            requests,
            error_rate,
            usable_control,
            thresholds,
            (level, promote_level),
            final_requests,
        )
    ]

    latency: _Finding | None = None
    if sample.buckets and usable_control is not None and usable_control.buckets:
        latency = _judge_latency_concurrent(
            Histogram.from_cumulative(list(sample.buckets)),
            Histogram.from_cumulative(list(usable_control.buckets)),
            thresholds,
            level,
        )
    if latency is None:
        if usable_control is None:
            why = "no stable traffic to compare with"
        elif not (sample.buckets and usable_control.buckets):
            why = "no latency histogram to compare stable with"
        else:
            why = "too few requests in the histograms to compare stable with"
        latency = _judge_latency_baseline(sample, baseline_p95_seconds, thresholds, level, why)
    if latency is not None:
        findings.append(latency)

    note = "; ".join(f.text for f in findings)
    breaches = tuple(f.breach for f in findings if f.breach is not None)
    if breaches:
        return Measurement(
            Outcome.FAILED, sample, baseline_p95_seconds, breaches, note, control=control
        )
    if any(f.state == "undecided" for f in findings):
        hopeless = "; ".join(f.hopeless for f in findings if f.hopeless)
        return Measurement(
            Outcome.INCONCLUSIVE,
            sample,
            baseline_p95_seconds,
            note=note,
            control=control,
            hopeless=hopeless,
        )
    return Measurement(Outcome.SUCCESSFUL, sample, baseline_p95_seconds, note=note, control=control)


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

    latest = measurements[-1] if measurements else None
    if latest is not None and latest.outcome is Outcome.INCONCLUSIVE and latest.hopeless:
        reason = Breach(
            "inconclusive",
            None,
            None,
            f"the stage cannot show the canary healthy in the time it has left: {latest.hopeless}",
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
