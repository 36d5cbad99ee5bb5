"""Figures for people, in one place: percentages, milliseconds, whole request counts, durations,
the router's state in words, a stage's figures and a trigger in words.

Every message, log line, artifact and report quotes figures through these functions, so the same
figure reads the same everywhere (``0.02403571428571428`` s is ``24 ms``, ``171.258`` requests is
``171 requests``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the core's analysis formats its reasons here: no import back into it
    from deployflow.providers.base import RouterState

NO_VALUE = "n/a"
# A message's headline (its first line) is at most this many words; the statistics follow it.
HEADLINE_WORDS = 20
# A trigger in words at most this many, so the message that names it (":rewind: shop v2 rolled
# back to v1: ...", "Stage 2 *rolled back*: ...") keeps within ``HEADLINE_WORDS``.
TRIGGER_WORDS = 13


def percent(rate: float | None) -> str:
    """0.2 -> ``20.0%``, 0.0012 -> ``0.12%``, 0.05 -> ``5.0%``; ``n/a`` for no value."""
    if rate is None:
        return NO_VALUE
    value = rate * 100.0
    if value == 0:
        return "0%"
    if abs(value) < 1:
        return f"{value:.2f}%"
    return f"{value:.1f}%"


def limit_percent(rate: float) -> str:
    """A configured limit as it was written: 0.05 -> ``5%``, 0.005 -> ``0.5%``."""
    return f"{rate * 100:g}%"


def confidence(level: float) -> str:
    """A confidence level, with the digits that keep it below 100%: 0.999 -> ``99.9%``,
    0.8 -> ``80%``, 0.99998 -> ``99.998%`` (never "100%", which no bound has)."""
    if not 0.0 < level < 1.0:
        return f"{level * 100:g}%"
    digits = max(0, math.ceil(-math.log10(1.0 - level) - 1e-9) - 1)
    shown = f"{level * 100:.{digits}f}"
    while float(shown) >= 100.0:  # rounding up to 100: one more digit
        digits += 1
        shown = f"{level * 100:.{digits}f}"
    return f"{shown.rstrip('0').rstrip('.') if '.' in shown else shown}%"


def probability(value: float) -> str:
    """A chance, two significant digits: ``0.031``, ``1e-05``."""
    return f"{value:.2g}"


def p_value(value: float) -> str:
    """A test's p-value: ``p=0.031``, ``p<1e-6``."""
    return "p<1e-6" if value < 1e-6 else f"p={probability(value)}"


def millis(seconds: float | None, *, precise: bool = False) -> str:
    """0.01995 -> ``20 ms``, 0.0042 -> ``4.2 ms``; ``precise``: always a tenth of a millisecond
    (``20.0 ms``: statistics a reviewer compares); ``n/a`` for no value."""
    if seconds is None:
        return NO_VALUE
    ms = seconds * 1000.0
    return f"{ms:.1f} ms" if ms < 10 or precise else f"{ms:.0f} ms"


def requests(count: float | None) -> str:
    """342.205 -> ``342 requests``, 30000 -> ``30,000 requests``, 1 -> ``1 request``; ``n/a``
    for no value."""
    if count is None:
        return NO_VALUE
    n = round(count)
    return f"{n:,} request" if n == 1 else f"{n:,} requests"


def whole(count: float | None) -> str:
    """A count as a whole number (``171.258`` -> ``171``); ``n/a`` for no value."""
    return NO_VALUE if count is None else str(round(count))


def duration(delta: timedelta | float | None) -> str:
    """Seconds or a timedelta as ``0.4 s``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if delta is None:
        return NO_VALUE
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 60:
        whole_seconds = seconds >= 10 or round(seconds, 1) == round(seconds)
        return f"{seconds:.0f} s" if whole_seconds else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def rough_duration(seconds: float) -> str:
    """A time limit or an estimate, to the minute past one: ``18 s``, ``3.2 s``, ``30 min``,
    ``1 h 30 min``."""
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s".replace(".0 s", " s")
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def is_latency(metric: str) -> bool:
    return metric.startswith("p95") or metric in ("latency", "health_latency")


def metric_value(metric: str, value: float | None) -> str:
    """A value in the unit of its metric (an error rate in %, a latency in ms)."""
    if metric == "error_rate":
        return percent(value)
    if is_latency(metric):
        return millis(value)
    return NO_VALUE if value is None else f"{value:g}"


def metric_limit(metric: str, limit: float | None) -> str:
    """A configured limit in the unit of its metric, as it was written (``5%``, ``250 ms``)."""
    if limit is not None and metric == "error_rate":
        return limit_percent(limit)
    return metric_value(metric, limit)


METRIC_NAMES = {
    "error_rate": "error rate",
    "p95_seconds": "P95 latency",
    "p95_latency": "P95 latency",
    "metrics": "metric queries",
    "inconclusive": "too little evidence",
    "canary_down": "canary down",
    "error": "a step that broke",
    "analysis": "the analysis",
}


def metric_name(metric: str) -> str:
    """A metric's name in words (``error_rate`` -> ``error rate``)."""
    return METRIC_NAMES.get(metric, metric.replace("_", " "))


def router_state(state: RouterState | None) -> str:
    """Where traffic goes, in words: ``all traffic on stable (127.0.0.1:8001)``, ``95% stable
    (...), 5% canary (...)``; ``not known`` for no state."""
    if state is None:
        return "not known"
    stable = state.stable or "nothing"
    if state.canary is None or state.canary_weight == 0:
        return f"all traffic on stable ({stable})"
    if state.canary_weight >= 100:
        return f"all traffic on the canary ({state.canary})"
    return (
        f"{100 - state.canary_weight}% on stable ({stable}), "
        f"{state.canary_weight}% on the canary ({state.canary})"
    )


def sample_figures(error_rate: float | None, p95_seconds: float | None, count: float | None) -> str:
    """One measurement: ``errors 0.10%, P95 20 ms, 342 requests``; ``no data`` when it had no
    requests figure (nothing was measured)."""
    if count is None:
        return "no data"
    return f"errors {percent(error_rate)}, P95 {millis(p95_seconds)}, {requests(count)}"


def measured(
    error_rate: float | None,
    p95_seconds: float | None,
    count: float | None,
    *,
    precise: bool = False,
) -> str:
    """What one look measured, each figure or ``n/a``: ``error rate 0.10%, P95 20 ms, 342
    requests``; ``precise``: the P95 to a tenth of a millisecond."""
    p95 = millis(p95_seconds, precise=precise)
    counted = requests(count) if count is not None else f"requests {NO_VALUE}"
    return f"error rate {percent(error_rate)}, P95 {p95}, {counted}"


def values_figures(values: Mapping[str, float | None]) -> str:
    """A stage's last values (``StageResult.last_values()``) as ``sample_figures``."""
    return sample_figures(
        values.get("error_rate"), values.get("p95_seconds"), values.get("requests")
    )


def trigger_headline(
    metric: str,
    value: float | None,
    limit: float | None,
    *,
    count: float | None = None,
    detail: str = "",
) -> str:
    """A trigger in words with its figure and its limit, e.g. ``error rate 11.3% over 60
    requests, above the 5% limit`` or ``P95 latency 480 ms, above the 250 ms limit``; for a
    trigger without a figure (metric queries failed, a gate refused) its ``detail``, shortened."""
    name = metric_name(metric)
    if value is not None:
        over = f" over {requests(count)}" if count is not None else ""
        limit_text = f", above the {metric_limit(metric, limit)} limit" if limit is not None else ""
        return f"{name} {metric_value(metric, value)}{over}{limit_text}"
    return shorten(detail, TRIGGER_WORDS) if detail else name


def shorten(text: str, words: int = 20) -> str:
    """At most ``words`` words of ``text``; a cut ends with an ellipsis."""
    parts = text.split()
    if len(parts) <= words:
        return " ".join(parts)
    return " ".join(parts[:words]).rstrip(",;:") + "…"
