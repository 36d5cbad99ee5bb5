"""The statistics a canary verdict rests on: plain math, no numpy, every function pure.

- ``wilson_interval``: a confidence interval for an error rate seen as ``errors`` of ``requests``.
  It stays inside 0..1 and keeps its coverage at small samples and rates near 0, where the
  textbook ``p +- z * sqrt(p(1-p)/n)`` interval claims far more certainty than a few dozen
  requests give.
- ``wilson_bounds``: the same, with a one-sided level for each end, because the two ends guard
  different mistakes (rolling back a healthy canary, promoting a bad one).
- ``per_look_confidence``: a stage is looked at every interval; each look is a chance for a
  healthy canary to cross a bound by luck. The stage's false-alarm budget ``1 - confidence`` is
  spent evenly over the most looks the stage can take (a Bonferroni alpha-spending rule), which
  holds whatever the correlation between looks, so checking every interval does not inflate false
  alarms beyond the stated confidence.
- ``requests_to_show_below``: how many requests a version at a given error rate needs before
  its upper bound clears a limit; what the deploy plan quotes as the time a stage will need.
- ``Histogram`` and ``mann_whitney``: latency compared from histogram bucket counts of canary and
  stable in the same window. A rank test on bucketed counts (every request in one bucket ties with
  the others in it; the variance is tie-corrected) says whether the canary is slower beyond
  chance; ``Histogram.quantile`` interpolates a P95 inside its bucket the way Prometheus'
  ``histogram_quantile`` does.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()


def z_for(confidence: float) -> float:
    """The two-sided normal critical value of a ``confidence`` interval (0.95 -> 1.96)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return _NORMAL.inv_cdf(0.5 + confidence / 2.0)


def per_look_confidence(confidence: float, looks: int) -> float:
    """The confidence each of ``looks`` looks needs so that all of them together hold
    ``confidence``: the false-alarm budget is split evenly between the looks."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    return 1.0 - (1.0 - confidence) / looks


@dataclass(frozen=True)
class Interval:
    """A confidence interval for a rate; ``low <= estimate <= high``."""

    estimate: float
    low: float
    high: float
    confidence: float


def _wilson_end(p: float, n: float, z: float, sign: float) -> float:
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denominator
    half = (z / denominator) * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    return min(1.0, max(0.0, centre + sign * half))


def wilson_interval(errors: float, requests: float, confidence: float) -> Interval:
    """Two-sided Wilson score interval of the rate ``errors / requests``.

    Counts may be fractional (Prometheus' ``increase()`` extrapolates); ``errors`` is clamped to
    ``0..requests``.
    """
    tail = (1.0 - confidence) / 2.0
    return wilson_bounds(errors, requests, 1.0 - tail, 1.0 - tail)


def wilson_bounds(errors: float, requests: float, low_level: float, high_level: float) -> Interval:
    """Wilson score bounds of ``errors / requests`` with one-sided levels of their own: the rate
    is above ``low`` with probability ``low_level`` and below ``high`` with ``high_level``, so
    the interval covers it with ``low_level + high_level - 1``.
    """
    if requests <= 0:
        raise ValueError(f"requests must be positive, got {requests}")
    for name, level in (("low_level", low_level), ("high_level", high_level)):
        if not 0.5 <= level < 1.0:
            raise ValueError(f"{name} must be in [0.5, 1), got {level}")
    n = float(requests)
    p = min(max(errors / n, 0.0), 1.0)
    low = 0.0 if p == 0.0 else _wilson_end(p, n, _NORMAL.inv_cdf(low_level), -1.0)
    high = 1.0 if p == 1.0 else _wilson_end(p, n, _NORMAL.inv_cdf(high_level), 1.0)
    return Interval(p, min(low, p), max(high, p), low_level + high_level - 1.0)


def requests_to_show_below(rate: float, limit: float, level: float) -> int | None:
    """How many requests a version failing at ``rate`` needs before the Wilson upper bound of
    its error rate, at one-sided ``level``, falls below ``limit``: what a stage must see to
    promote it. None when no number will (``rate`` at or above ``limit``)."""
    if rate >= limit:
        return None
    low, high = 1, 2
    while wilson_bounds(rate * high, high, 0.5, level).high >= limit:
        low, high = high, high * 2
        if high > 10**12:
            return None
    while low < high:  # the bound falls as requests grow at a fixed rate: bisect
        mid = (low + high) // 2
        if wilson_bounds(rate * mid, mid, 0.5, level).high < limit:
            high = mid
        else:
            low = mid + 1
    return high


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the chance of ``k`` or more failures in ``n`` requests
    that each fail with probability ``p``."""
    if not 0 <= k <= n:
        raise ValueError(f"k must be within 0..n ({n}), got {k}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be within 0..1, got {p}")
    if k == 0:
        return 1.0
    return math.fsum(math.comb(n, i) * p**i * (1.0 - p) ** (n - i) for i in range(k, n + 1))


@dataclass(frozen=True)
class Histogram:
    """Request latencies as bucket counts, the shape Prometheus histograms have.

    ``bounds`` are the buckets' upper bounds in seconds, increasing, the last one may be
    ``math.inf``; ``counts`` are the requests in each bucket (not cumulative), so bucket ``i``
    holds latencies in ``(bounds[i-1], bounds[i]]``.
    """

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts):
            raise ValueError("a histogram needs one count per bucket bound")
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError(f"bucket bounds must increase, got {self.bounds}")
        if any(c < 0 or math.isnan(c) for c in self.counts):
            raise ValueError("bucket counts must be non-negative numbers")

    @classmethod
    def from_cumulative(cls, buckets: list[tuple[float, float]]) -> Histogram:
        """From Prometheus ``le`` buckets: (upper bound, cumulative count) pairs in any order.

        Extrapolated counts can dip slightly between buckets; a count never goes negative.
        """
        ordered = sorted(buckets)
        counts: list[float] = []
        previous = 0.0
        for _, cumulative in ordered:
            counts.append(max(0.0, cumulative - previous))
            previous = max(previous, cumulative)
        return cls(tuple(b for b, _ in ordered), tuple(counts))

    @property
    def total(self) -> float:
        return math.fsum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile, interpolated linearly inside its bucket (as Prometheus'
        ``histogram_quantile``); in the open-ended last bucket it is that bucket's lower bound.
        None without requests."""
        total = self.total
        if total <= 0:
            return None
        rank = q * total
        seen = 0.0
        for i, (bound, count) in enumerate(zip(self.bounds, self.counts, strict=True)):
            if count > 0 and seen + count >= rank:
                lower = self.bounds[i - 1] if i > 0 else 0.0
                if math.isinf(bound):
                    return lower
                return lower + (bound - lower) * (rank - seen) / count
            seen += count
        finite = [b for b in self.bounds if not math.isinf(b)]
        return finite[-1] if finite else None

    def quantile_bounds(self, q: float, level: float) -> tuple[float, float] | None:
        """One-sided ``level`` bounds of the ``q`` quantile, distribution-free: the ranks
        ``n*q -+ z*sqrt(n*q*(1-q))`` (the binomial count of requests below the true quantile)
        read off the histogram. None without requests."""
        total = self.total
        if total <= 0:
            return None
        spread = z_for(2.0 * level - 1.0) * math.sqrt(q * (1.0 - q) / total)
        low = self.quantile(max(q - spread, 0.0))
        high = self.quantile(min(q + spread, 1.0))
        if low is None or high is None:
            return None
        return low, high

    def on_bounds(self, bounds: tuple[float, ...]) -> Histogram:
        """The same requests on coarser buckets (``bounds`` must be a subset of this one's)."""
        cumulative = dict(zip(self.bounds, _accumulate(self.counts), strict=True))
        return Histogram.from_cumulative([(b, cumulative[b]) for b in bounds])


def _accumulate(counts: tuple[float, ...]) -> list[float]:
    out: list[float] = []
    running = 0.0
    for c in counts:
        running += c
        out.append(running)
    return out


def common_buckets(a: Histogram, b: Histogram) -> tuple[Histogram, Histogram]:
    """Both histograms on the bucket bounds they share, so their buckets line up.

    Raises:
        ValueError: They share no bound.
    """
    shared = tuple(sorted(set(a.bounds) & set(b.bounds)))
    if not shared:
        raise ValueError("the two histograms share no bucket bound")
    if shared == a.bounds and shared == b.bounds:
        return a, b
    return a.on_bounds(shared), b.on_bounds(shared)


@dataclass(frozen=True)
class RankTest:
    """Mann-Whitney U of ``slower`` against ``faster``: ``p_value`` is the one-sided chance of a
    U this large if both came from the same distribution; ``probability`` estimates
    P(a request of ``slower`` takes longer than one of ``faster``), 0.5 when alike."""

    u: float
    z: float
    p_value: float
    probability: float


def mann_whitney(slower: Histogram, faster: Histogram) -> RankTest:
    """One-sided Mann-Whitney U test that ``slower`` has longer latencies than ``faster``, on
    bucket counts: requests in the same bucket are ties (each counts one half), and the variance
    carries the tie correction. Normal approximation with continuity correction.

    Raises:
        ValueError: A histogram has no requests, or they share no bucket bound.
    """
    a, b = common_buckets(slower, faster)
    n1, n2 = a.total, b.total
    if n1 <= 0 or n2 <= 0:
        raise ValueError("both histograms need requests for a rank test")
    u = 0.0
    below = 0.0
    tie_term = 0.0
    for ca, cb in zip(a.counts, b.counts, strict=True):
        u += ca * (below + 0.5 * cb)
        below += cb
        t = ca + cb
        tie_term += t * t * t - t
    n = n1 + n2
    mean = n1 * n2 / 2.0
    variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0))) if n > 1 else 0.0
    probability = u / (n1 * n2)
    if variance <= 0.0:  # every request in one bucket: nothing tells the two apart
        return RankTest(u, 0.0, 0.5, probability)
    z = (u - mean - 0.5) / math.sqrt(variance)
    return RankTest(u, z, 0.5 * math.erfc(z / math.sqrt(2.0)), probability)


def bucket_index(bounds: tuple[float, ...], latency: float) -> int:
    """The bucket a latency falls in (``le`` semantics: a value on a bound belongs to it)."""
    return min(bisect_left(bounds, latency), len(bounds) - 1)
