"""Canary analysis: turn metric samples into measurements, and measurements into a stage verdict.

Everything here is a pure function of data, in the manner of Argo Rollouts' AnalysisRun:
``evaluate`` classifies one sample as Successful / Failed / Inconclusive / Error, weighing the
evidence the sample size allows (``deployflow.stats``) and comparing the canary with the stable
version over the same window (Kayenta's concurrent control), and ``analyse_stage`` decides
whether the stage promotes, keeps observing, or rolls back.

A verdict is a claim about evidence. Harm shown beyond doubt (a failed measurement, metrics that
cannot be read several times running) rolls back at once. Health shown well enough for the
traffic the next stage puts at risk (``exposure_confidence``) promotes, once the stage's observe
time is over. Anything else is "not shown yet": the stage keeps observing, up to its maximum
duration, and then does what the spec's ``on_inconclusive`` says (ask a person, go on when the
point estimates are within the limits, or roll back). Lack of evidence is never called harm, and
missing data never promotes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Literal

from deployflow.figures import confidence as _level
from deployflow.figures import millis
from deployflow.figures import p_value as _p
from deployflow.figures import percent as _rate
from deployflow.figures import requests as _requests
from deployflow.stats import (
    Histogram,
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
    # Neither healthy nor harmful shown within the stage's maximum duration, and the spec says
    # a person decides (``on_inconclusive: pause``): traffic stays, a form asks.
    PAUSE = "pause"


OnInconclusive = Literal["pause", "promote", "rollback"]


@dataclass(frozen=True)
class Thresholds:
    """Limits the analysis applies; built from the spec's ``analysis`` section."""

    max_error_rate: float = 0.05
    max_p95_ratio: float = 2.0
    min_requests: float = 20
    failure_limit: int = 0
    consecutive_error_limit: int = 3
    # The chance, per stage, that a healthy canary is not failed by luck (spent over its looks).
    confidence: float = 0.999
    # The chance that a canary right at a maximum is not promoted to all the traffic (spent over
    # the looks that may promote); a stage that leads to less traffic needs less
    # (``exposure_confidence``).
    promote_confidence: float = 0.95
    # What a stage that is neither shown healthy nor harmful by its maximum duration does.
    on_inconclusive: OnInconclusive = "pause"


def exposure_confidence(promote_confidence: float, exposure: float) -> float:
    """The confidence a promotion needs when it gives the canary ``exposure`` (0..1] of the
    traffic: the chance of promoting a canary right at a limit, times the share of traffic it
    then serves, stays within ``1 - promote_confidence``. 5% to 25% needs 80% at the default
    0.95, to 50% 90%, to 100% 95%; never less than 50% (the estimate itself within the limit).
    """
    if not 0.0 < exposure <= 1.0:
        raise ValueError(f"exposure must be in (0, 1], got {exposure}")
    return 1.0 - min(0.5, (1.0 - promote_confidence) / exposure)


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
    # The point estimates (error rate, P95 ratio) are within the limits, whatever the doubt
    # around them: what ``on_inconclusive: promote`` goes on with.
    within_limits: bool = False

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
            "within_limits": self.within_limits,
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
    # How a promotion or a pause was reached when it was not on evidence alone (the spec's
    # ``on_inconclusive`` at the stage's maximum duration), for people.
    note: str = ""


def _clean(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return value


# Figures in reasons are formatted where every figure is (``deployflow.figures``); the P95s to a
# tenth of a millisecond, statistics a reviewer compares.
_ms = partial(millis, precise=True)


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
    """One metric's verdict: ``above`` (a breach), ``below`` (healthy) or ``undecided``;
    ``within`` says whether its point estimate is within the limit."""

    state: Literal["above", "below", "undecided"]
    text: str
    within: bool
    breach: Breach | None = None


def _judge_error_rate(
    requests: float,
    error_rate: float,
    control: MetricSample | None,
    thresholds: Thresholds,
    levels: tuple[float, float],
) -> _Finding:
    limit = thresholds.max_error_rate
    errors = error_rate * requests
    ci = wilson_bounds(errors, requests, *levels)
    seen = f"error rate {_rate(ci.estimate)} over {_requests(requests)}"
    control_rate = _clean(control.error_rate) if control is not None else None
    if control is not None and control_rate is not None and control.requests is not None:
        stable = f"stable {_rate(control_rate)} over {_requests(control.requests)}"
    else:
        stable = "no stable traffic to compare with"
    within = ci.estimate <= limit
    if ci.low > limit:
        reason = (
            f"{seen}, above the {_rate(limit)} limit (at least {_rate(ci.low)} at "
            f"{_level(levels[0])} confidence; {stable})"
        )
        return _Finding("above", reason, within, Breach("error_rate", error_rate, limit, reason))
    if ci.high < limit or (limit == 0.0 and errors == 0.0):
        return _Finding(
            "below",
            f"{seen}, below the {_rate(limit)} limit (at most {_rate(ci.high)} at "
            f"{_level(levels[1])} confidence; {stable})",
            within,
        )
    return _Finding(
        "undecided",
        f"{seen}, not yet shown below the {_rate(limit)} limit (at most {_rate(ci.high)} at "
        f"{_level(levels[1])} confidence; {stable})",
        within,
    )


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
        f"P95 {_ms(p95_canary)} against stable's {_ms(p95_stable)} in the same window "
        f"({ratio:.2f}x; rank test {_p(test.p_value)})"
    )
    alpha = 1.0 - level
    if ratio > limit and test.p_value < alpha:
        reason = f"{text}, above the {limit:g}x limit"
        return _Finding(
            "above",
            reason,
            False,
            Breach("p95_latency", p95_canary, limit * p95_stable, reason),
        )
    if ratio <= limit:
        return _Finding("below", f"{text}, within {limit:g}x", True)
    return _Finding("undecided", f"{text}, above {limit:g}x but not beyond chance yet", False)


def _judge_latency_baseline(
    sample: MetricSample,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    level: float,
    why: str,
    stable_p95_seconds: float | None = None,
) -> _Finding | None:
    """The second guard, when no stable traffic can be compared with: the canary's P95 against
    the stable P95 measured before the deploy, when stable served all the traffic (the load a
    version with all the traffic serves). With a histogram, a breach needs the lower bound of
    the P95 above the limit, not one point. None when there is no baseline.

    ``stable_p95_seconds`` is stable's P95 the last time it served beside the canary in this
    rollout (the 100% stage has no stable traffic of its own). When it is the higher of the two,
    it is the reference: a service slower than before the deploy whichever version answers (a
    busier hour, a loaded machine) is not harm the canary did, and a rollback must be for harm.
    """
    reference = baseline_p95_seconds if baseline_p95_seconds and baseline_p95_seconds > 0 else None
    words = (
        f"the pre-deploy baseline {_ms(reference)}, stable with all the traffic"
        if reference is not None
        else ""
    )
    if stable_p95_seconds is not None and stable_p95_seconds > (reference or 0.0):
        before = f" (above its pre-deploy {_ms(reference)})" if reference is not None else ""
        reference = stable_p95_seconds
        words = f"stable's {_ms(reference)} in its last window beside the canary{before}"
    if reference is None:
        return None
    limit = thresholds.max_p95_ratio * reference
    histogram = Histogram.from_cumulative(list(sample.buckets)) if sample.buckets else None
    p95 = _clean(sample.p95_seconds)
    if p95 is None and histogram is not None:
        p95 = histogram.quantile(0.95)
    if p95 is None:
        return _Finding(
            "undecided", "P95 latency has no data although requests were counted", False
        )
    bounds = histogram.quantile_bounds(0.95, level) if histogram is not None else None
    lowest = bounds[0] if bounds is not None else p95
    shown = f"P95 {_ms(p95)}" + (f" (at least {_ms(lowest)})" if bounds is not None else "")
    text = f"{shown} against {thresholds.max_p95_ratio:g}x {words} ({_ms(limit)}; {why})"
    if lowest > limit:
        reason = f"{text}: above the limit"
        return _Finding("above", reason, False, Breach("p95_latency", p95, limit, reason))
    if p95 > limit:
        return _Finding("undecided", f"{text}: above the limit but not beyond chance yet", False)
    return _Finding("below", text, True)


def evaluate(
    sample: MetricSample,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    *,
    control: MetricSample | None = None,
    looks: int = 1,
    promotion_looks: int = 1,
    exposure: float = 1.0,
    stable_p95_seconds: float | None = None,
) -> Measurement:
    """Classify one sample of the canary, against the stable version's sample from the same
    window (``control``) and, when stable had no traffic, the pre-deploy baseline (or
    ``stable_p95_seconds``, stable's P95 when it last served beside the canary, when higher).

    The error rate fails only when the lower bound of its confidence interval is above the
    maximum (at ``thresholds.confidence``, spent over the stage's ``looks``) and succeeds only
    when the upper bound is below it (at ``exposure_confidence`` of the traffic the promotion
    gives the canary, ``exposure``, spent over the ``promotion_looks`` that may promote); the
    latency fails only when the canary's P95 is above ``max_p95_ratio`` times the stable's *and*
    a rank test on the two histograms says the canary is slower beyond chance. Anything in
    between is inconclusive: not shown yet, which is never a reason to roll back by itself.
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
    # over the looks that may promote, in proportion to the traffic the promotion puts at risk.
    level = per_look_confidence(thresholds.confidence, looks)
    promote_level = per_look_confidence(
        exposure_confidence(thresholds.promote_confidence, exposure), promotion_looks
    )
    usable_control = _usable(control, thresholds)
    findings = [
        _judge_error_rate(requests, error_rate, usable_control, thresholds, (level, promote_level))
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
        latency = _judge_latency_baseline(
            sample, baseline_p95_seconds, thresholds, level, why, stable_p95_seconds
        )
    if latency is not None:
        findings.append(latency)

    note = "; ".join(f.text for f in findings)
    within = all(f.within for f in findings)
    breaches = tuple(f.breach for f in findings if f.breach is not None)
    outcome = Outcome.SUCCESSFUL
    if breaches:
        outcome = Outcome.FAILED
    elif any(f.state == "undecided" for f in findings):
        outcome = Outcome.INCONCLUSIVE
    return Measurement(
        outcome,
        sample,
        baseline_p95_seconds,
        breaches,
        note,
        control=control,
        within_limits=within,
    )


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


def _has_estimates(m: Measurement, thresholds: Thresholds) -> bool:
    """The measurement had data to estimate from (not an error, enough requests)."""
    requests = _clean(m.sample.requests)
    return (
        m.sample.error is None
        and requests is not None
        and requests >= thresholds.min_requests
        and _clean(m.sample.error_rate) is not None
    )


def analyse_stage(
    measurements: list[Measurement],
    thresholds: Thresholds,
    *,
    may_promote: bool,
    out_of_time: bool = False,
    time_limit: str = "",
) -> StageDecision:
    """Decide what a stage does after its latest measurement.

    Args:
        measurements: every measurement of this stage so far, oldest first.
        thresholds: the limits, and what to do when time runs out (``on_inconclusive``).
        may_promote: this look is one of the stage's chances to promote (its observe time is
            over, and the stage is at one of ``deployflow.rollout.promotion_times``).
        out_of_time: the stage has reached its maximum duration without a verdict.
        time_limit: that maximum in words ("30 min"), for the reason.

    Harm shown (a failed measurement beyond ``failure_limit``; metric queries failing more than
    ``consecutive_error_limit`` times running) rolls back at once. At a look that may promote, a
    successful latest measurement promotes. Anything else keeps observing until
    ``out_of_time``, then ``thresholds.on_inconclusive`` decides: ``pause`` asks a person,
    ``promote`` goes on when the latest point estimates are within the limits (and rolls back
    otherwise), ``rollback`` rolls back.
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
            f"{errors} metric queries failed in a row (limit "
            f"{thresholds.consecutive_error_limit}): {last.note}",
        )
        return StageDecision(Verdict.ROLLBACK, reason, counts)

    if not may_promote:
        return StageDecision(Verdict.CONTINUE, None, counts)

    latest = measurements[-1] if measurements else None
    if latest is not None and latest.outcome is Outcome.SUCCESSFUL:
        return StageDecision(Verdict.PROMOTE, None, counts)

    if not out_of_time:
        return StageDecision(Verdict.CONTINUE, None, counts)

    seen = latest.note if latest is not None and latest.note else "no measurement was taken"
    within = time_limit and f" within {time_limit}"
    unproven = f"not shown healthy or harmful{within}: {seen}"
    rule = thresholds.on_inconclusive
    if rule == "pause":
        return StageDecision(
            Verdict.PAUSE,
            Breach("inconclusive", None, None, f"{unproven}; a person decides"),
            counts,
        )
    if rule == "promote" and latest is not None and latest.within_limits:
        note = f"promoted on its estimates within the limits ({unproven})"
        return StageDecision(Verdict.PROMOTE, None, counts, note=note)
    if rule == "promote":
        why = (
            "its estimates are not within the limits"
            if latest is not None and _has_estimates(latest, thresholds)
            else "there is nothing to promote on"
        )
        text = f"{unproven}; on_inconclusive 'promote' goes on only within the limits, and {why}"
        return StageDecision(Verdict.ROLLBACK, Breach("inconclusive", None, None, text), counts)
    text = f"{unproven}; on_inconclusive is 'rollback'"
    return StageDecision(Verdict.ROLLBACK, Breach("inconclusive", None, None, text), counts)
