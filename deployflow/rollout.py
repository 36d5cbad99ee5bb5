"""Observing one rollout stage: measure every interval, evaluate, stop as soon as the verdict is in.

The loop is plain Python with an injectable clock so it is tested in milliseconds; the Prefect task
that runs it only adds logging.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
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
    exposure_confidence,
)
from deployflow.figures import rough_duration as duration_words
from deployflow.polling import DeadlineExceeded, within_deadline
from deployflow.providers.base import Metrics
from deployflow.signals import SignalProbe, with_signals
from deployflow.spec import AnalysisSpec
from deployflow.stats import (
    Histogram,
    per_look_confidence,
    requests_to_show_below,
    wilson_bounds,
)


def thresholds_from(analysis: AnalysisSpec) -> Thresholds:
    """The analysis limits the spec asks for. ``on_inconclusive`` is the spec's, which the deploy
    settles for its environment once (``ServiceSpec.for_environment``); unset here (a spec used
    outside a deploy), it is the rule of environments other than production."""
    on_inconclusive = analysis.inconclusive_rule("")
    return Thresholds(
        max_error_rate=analysis.max_error_rate,
        max_p95_ratio=analysis.max_p95_ratio,
        min_requests=analysis.min_requests,
        failure_limit=analysis.failure_limit,
        consecutive_error_limit=analysis.consecutive_error_limit,
        confidence=analysis.confidence,
        promote_confidence=analysis.promote_confidence,
        on_inconclusive=on_inconclusive,
    )


PROMOTION_STRETCH = 1.25


def promotion_times(observe_seconds: float, max_seconds: float) -> list[float]:
    """When a stage may promote, in seconds from its start: at the end of its observe time, then
    each time it has run another quarter longer, and at its maximum duration. A few chances,
    fixed in advance, so the promotion's doubt budget is split between few of them (a 10 min
    stage of up to 30 min: 10, 12.5, 15.6, 19.5, 24.4 and 30 min)."""
    times, at = [], observe_seconds
    while at < max_seconds - 1e-9:
        times.append(at)
        at *= PROMOTION_STRETCH
    times.append(max(max_seconds, observe_seconds))
    return times


def looks_in_stage(
    observe_seconds: float, max_seconds: float, interval_seconds: float
) -> tuple[int, int]:
    """(every look a stage can take, the looks that may promote): one look per interval up to
    its maximum duration, and one per ``promotion_times``. The stage's false-alarm budget is
    spread over the first, its promotion budget over the second."""
    total = max(1, math.ceil(max(observe_seconds, max_seconds) / interval_seconds - 1e-9))
    return total, min(total, len(promotion_times(observe_seconds, max_seconds)))


def exposure_after(steps: Sequence[int], index: int) -> float:
    """The share of traffic (0..1] the canary serves once stage ``index`` promotes: the next
    step's weight, or all of it after the last."""
    return (steps[index + 1] if index + 1 < len(steps) else 100) / 100.0


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
    # How a promotion was reached when it was not on evidence alone (the spec's on_inconclusive
    # rule, a person's answer to a pause), for people.
    note: str = ""
    # Probe requests sent straight to the canary during the stage (``analysis.probe_rate``),
    # counted apart from the user traffic its figures also hold.
    probe_sent: int = 0
    probe_failed: int = 0
    # A rollback verdict put all traffic back on stable at once, the router confirming it in
    # this many seconds (the rollback then confirms it is still so instead of restoring again).
    restore_seconds: float | None = None

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
        if self.note:
            return self.note
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
            "note": self.note,
            "probe": {"sent": self.probe_sent, "failed": self.probe_failed},
            "measurements": [m.to_dict() for m in self.measurements],
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
        }


class RolloutBroke(Exception):
    """A step of the rollout raised (the router refused a weight, a task broke) after
    ``stages`` were judged: they ran, took traffic and are evidence, so they travel with the
    error instead of being lost with the rollout's return value."""

    def __init__(self, stages: Sequence[StageResult], error: BaseException) -> None:
        super().__init__(str(error))
        self.stages = list(stages)
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:  # a result store may pickle it
        return (type(self), (self.stages, self.error))


def _stable_samples(stages: Sequence[StageResult]) -> Iterator[MetricSample]:
    """Stable's samples beside the canary in this rollout, the latest first (failed queries
    left out)."""
    for stage in reversed(stages):
        for m in reversed(stage.measurements):
            if m.control is not None and m.control.error is None:
                yield m.control


def stable_error_rate_bound(stages: Sequence[StageResult], confidence: float) -> float:
    """The highest error rate the stable version plausibly has, from the latest measurement that
    saw it with traffic: the upper end of its Wilson interval at ``confidence`` (one-sided).
    0 when no measurement did (a first release, metrics down): then nothing is excused."""
    for c in _stable_samples(stages):
        if c.error_rate is None or not c.requests:
            continue
        if not (math.isfinite(c.error_rate) and math.isfinite(c.requests)):
            continue
        return wilson_bounds(c.error_rate * c.requests, c.requests, 0.5, confidence).high
    return 0.0


def stable_p95_beside(stages: Sequence[StageResult], min_requests: float) -> float | None:
    """Stable's P95 the last time it served beside the canary in this rollout (the latest
    measurement whose stable sample has at least ``min_requests`` requests): the reference of a
    stage where stable has no traffic of its own, when it is above the pre-deploy baseline
    (``deployflow.analysis.evaluate``). None when no measurement saw stable with traffic."""
    for c in _stable_samples(stages):
        if c.p95_seconds is None or c.requests is None:
            continue
        if not (math.isfinite(c.p95_seconds) and c.p95_seconds > 0):
            continue
        if not (math.isfinite(c.requests) and c.requests >= min_requests):
            continue
        return c.p95_seconds
    return None


# A look's metric queries must answer within this share of the interval, and never need to in
# less than MIN_QUERY_SECONDS (a backend on the other side of a network answers in well under).
QUERY_SHARE = 0.5
MIN_QUERY_SECONDS = 1.0


def query_deadline(interval_seconds: float) -> float:
    """How long a look's metric queries may take in all: ``QUERY_SHARE`` of the interval, at
    least ``MIN_QUERY_SECONDS``."""
    return max(QUERY_SHARE * interval_seconds, MIN_QUERY_SECONDS)


def slow_look(deadline: float, interval_seconds: float) -> Measurement:
    """The measurement of a look whose queries did not answer in time: an error."""
    reason = (
        f"the metrics backend did not answer within {deadline:g} s (its share of the "
        f"{interval_seconds:g} s interval): counted as an error measurement"
    )
    return Measurement(
        Outcome.ERROR, MetricSample(None, None, None, error=reason), None, (), reason
    )


def canary_gone(reason: str | Breach, baseline_p95_seconds: float | None) -> Measurement:
    """The measurement of a canary that no longer runs (or, a ``Breach``, of a stage that must
    stop for another reason: the tracking database stopped answering): failed, whatever the
    metrics say."""
    breach = reason if isinstance(reason, Breach) else Breach("canary_down", None, None, reason)
    return Measurement(
        Outcome.FAILED,
        MetricSample(None, None, None),
        baseline_p95_seconds,
        (breach,),
        breach.reason,
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
    max_seconds: float | None = None,
    exposure: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_measurement: Callable[[Measurement], None] | None = None,
    gone: Callable[[], str | Breach | None] | None = None,
    control_version: str | None = None,
    signals: Sequence[SignalProbe] = (),
    query_seconds: float | None = None,
    stable_p95_seconds: float | None = None,
) -> StageResult:
    """Measure ``version`` every interval until the stage promotes, rolls back or pauses.

    The first measurement is taken one interval after the weight changed, so it sees traffic at
    the new weight. Harm shown ends the stage at once; promotion waits for the observe window
    and needs the canary shown healthy at the confidence the next stage's ``exposure`` (its
    share of traffic, 0..1] asks for. A stage shown neither healthy nor harmful keeps observing
    up to ``max_seconds`` (default: the observe time, no longer), then follows
    ``thresholds.on_inconclusive``. ``gone`` says why the canary no longer runs (None while it
    does): a dead canary is a failed measurement at once, not "no data" to wait out, and is
    asked again before a promotion.

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
    limit = observe_seconds if max_seconds is None else max(max_seconds, observe_seconds)
    deadline = query_seconds if query_seconds is not None else query_deadline(interval_seconds)
    looks, promotion_looks = looks_in_stage(observe_seconds, limit, interval_seconds)
    chances = promotion_times(observe_seconds, limit)
    # A stage longer than the window also checks the recent window at each look, so a fault that
    # starts mid-stage is not diluted by the healthy traffic before it; the budget covers both.
    recent_too = window_seconds < looks * interval_seconds - 1e-9
    tests = 2 * looks if recent_too else looks
    started_at = datetime.now(UTC)
    start = clock()
    measurements: list[Measurement] = []
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

            def measure(seconds: float) -> Measurement:
                sample = source.sample(version, seconds)
                control = None
                if control_version is not None:
                    control = source.sample(control_version, seconds)
                return evaluate(
                    sample,
                    baseline_p95_seconds,
                    thresholds,
                    control=control,
                    looks=tests,
                    promotion_looks=promotion_looks,
                    exposure=exposure,
                    stable_p95_seconds=stable_p95_seconds,
                )

            def look(window: float = window) -> tuple[Measurement, float | None]:
                measurement = measure(window)
                requests = measurement.sample.requests
                if recent_too and window > window_seconds + 1e-9:
                    recent = measure(window_seconds)
                    if (
                        recent.outcome is Outcome.FAILED
                        and measurement.outcome is not Outcome.FAILED
                    ):
                        measurement = replace(
                            recent, note=f"over the last {window_seconds:g} s: {recent.note}"
                        )
                return measurement, requests

            # The interval is a deadline: a look whose queries outlast their share of it is an
            # error measurement (the analysis decides what errors mean), not a stage stretched
            # by a slow backend while the canary keeps its traffic.
            try:
                measurement, requests = within_deadline(
                    look, seconds=deadline, what="the look's metric queries"
                )
            except DeadlineExceeded:
                measurement, requests = slow_look(deadline, interval_seconds), None
            if signals:
                elapsed = clock() - start
                measurement = with_signals(
                    measurement, [probe(elapsed, requests) for probe in signals]
                )
        measurements.append(measurement)
        if on_measurement is not None:
            on_measurement(measurement)
        elapsed = clock() - start
        # A promotion is looked for only at the stage's chances (``promotion_times``).
        may_promote = bool(chances) and elapsed >= chances[0] - 1e-9
        while chances and elapsed >= chances[0] - 1e-9:
            chances.pop(0)
        decide = partial(
            analyse_stage,
            thresholds=thresholds,
            may_promote=may_promote,
            out_of_time=elapsed >= limit - 1e-9,
            time_limit=duration_words(limit),
        )
        decision = decide(measurements)
        if decision.verdict is not Verdict.CONTINUE and decision.verdict is not Verdict.ROLLBACK:
            # Metrics lag: a canary that died since it was measured must not be promoted, nor a
            # person asked about it.
            why_gone = gone() if gone is not None else None
            if why_gone is not None:
                measurements.append(canary_gone(why_gone, baseline_p95_seconds))
                decision = decide(measurements)
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
                note=decision.note,
            )


@dataclass(frozen=True)
class StageEvidence:
    """What a stage's traffic buys, before the deploy: how soon it can reach a verdict."""

    index: int
    weight: int
    canary_rps: float
    confidence: float  # what its promotion needs (``exposure_confidence``)
    requests_needed: int | None  # to show a canary erring like stable below the limit
    verdict_seconds: float | None  # the promotion chance it probably promotes at; None: none
    probe_rps: float = 0.0  # of ``canary_rps``, probe requests sent straight to the canary

    def line(self, max_error_rate: float, stable_error_rate: float) -> str:
        """One line for people: the stage, its traffic, and when it probably decides."""
        head = f"stage {self.index + 1} at {self.weight}%: {self.canary_rps:.3g} canary requests/s"
        if self.probe_rps:
            head += f" ({self.probe_rps:g} of them probe requests)"
        if self.requests_needed is None:
            return f"{head}; stable's own error rate is not below the limit: it cannot promote"
        need = (
            f"~{self.requests_needed:,} requests to show it below {max_error_rate:.0%} at "
            f"{self.confidence:.0%} if it errs like stable ({stable_error_rate:.2%})"
        )
        if self.verdict_seconds is None:
            return f"{head}; {need}: more than the stage's maximum, so on_inconclusive decides"
        return f"{head}; {need}: verdict probably at {duration_words(self.verdict_seconds)}"


def plan_evidence(
    total_rps: float,
    stable_error_rate: float,
    steps: Sequence[int],
    observe_seconds: float,
    max_seconds: float,
    interval_seconds: float,
    thresholds: Thresholds,
    probe_rps: float = 0.0,
) -> list[StageEvidence]:
    """For each stage, at ``total_rps`` (the traffic now) with a canary as good as stable
    (``stable_error_rate``): the requests it needs to promote and the promotion chance
    (``promotion_times``) it probably promotes at. The arithmetic of the judge's promotion rule,
    run before the deploy so a team sees what its traffic buys. ``probe_rps``: probe requests
    sent straight to the canary in every stage (``analysis.probe_rate``), added to its share."""
    chances = promotion_times(observe_seconds, max_seconds)
    # A chance is taken at the first look (every interval) at or after it.
    times = [max(1, math.ceil(t / interval_seconds - 1e-9)) * interval_seconds for t in chances]
    plans = []
    for index, weight in enumerate(steps):
        rps = total_rps * weight / 100.0 + probe_rps
        confidence = exposure_confidence(
            thresholds.promote_confidence, exposure_after(steps, index)
        )
        level = per_look_confidence(confidence, len(chances))
        needed = requests_to_show_below(stable_error_rate, thresholds.max_error_rate, level)
        needed = None if needed is None else max(needed, math.ceil(thresholds.min_requests))
        seconds = None
        if needed is not None and rps > 0:
            seconds = next((t for t in times if t * rps >= needed), None)
        plans.append(StageEvidence(index, weight, rps, confidence, needed, seconds, probe_rps))
    return plans
