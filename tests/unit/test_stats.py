"""The statistics behind canary verdicts: known values, and properties over many inputs."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployflow.stats import (
    Histogram,
    binomial_tail,
    bucket_index,
    common_buckets,
    mann_whitney,
    per_look_confidence,
    requests_to_show_below,
    wilson_bounds,
    wilson_interval,
    z_for,
)

pytestmark = pytest.mark.unit

BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.25, math.inf)


def test_wilson_matches_the_textbook_value() -> None:
    ci = wilson_interval(10, 100, 0.95)
    assert (ci.low, ci.high) == (pytest.approx(0.0552, abs=1e-4), pytest.approx(0.1744, abs=1e-4))


def test_wilson_at_zero_errors_starts_at_zero_and_shrinks_with_requests() -> None:
    few, many = wilson_interval(0, 30, 0.99), wilson_interval(0, 3000, 0.99)
    assert few.low == many.low == 0.0
    assert few.high > 0.15  # 0 of 30 does not show a rate below 5%
    assert many.high < 0.003


@given(
    requests=st.floats(1, 1e6),
    fraction=st.floats(0, 1),
    confidence=st.floats(0.5, 0.99999),
)
def test_wilson_contains_the_estimate_and_stays_in_0_1(
    requests: float, fraction: float, confidence: float
) -> None:
    ci = wilson_interval(fraction * requests, requests, confidence)
    assert 0.0 <= ci.low <= ci.estimate <= ci.high <= 1.0


@given(requests=st.integers(1, 100_000), fraction=st.floats(0, 1))
def test_wilson_widens_with_confidence(requests: int, fraction: float) -> None:
    narrow = wilson_interval(fraction * requests, requests, 0.9)
    wide = wilson_interval(fraction * requests, requests, 0.999)
    assert wide.low <= narrow.low + 1e-12
    assert wide.high >= narrow.high - 1e-12


def test_one_sided_bounds_are_the_ends_of_two_sided_intervals() -> None:
    both = wilson_bounds(30, 500, 0.995, 0.95)
    assert both.low == pytest.approx(wilson_interval(30, 500, 0.99).low)
    assert both.high == pytest.approx(wilson_interval(30, 500, 0.90).high)
    assert both.confidence == pytest.approx(0.945)


def test_binomial_tail_known_values() -> None:
    assert binomial_tail(0, 5, 0.3) == 1.0
    assert binomial_tail(1, 5, 0.005) == pytest.approx(1 - 0.995**5)
    assert binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)
    assert binomial_tail(1, 5, 0.0) == 0.0


@given(n=st.integers(1, 60), p=st.floats(0, 1))
def test_binomial_tail_falls_as_k_grows(n: int, p: float) -> None:
    tails = [binomial_tail(k, n, p) for k in range(n + 1)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(tails))
    assert all(-1e-12 <= t <= 1 + 1e-12 for t in tails)


def test_bad_arguments_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="requests"):
        wilson_interval(0, 0, 0.95)
    with pytest.raises(ValueError, match="confidence"):
        z_for(1.0)
    with pytest.raises(ValueError, match="high_level"):
        wilson_bounds(1, 10, 0.9, 1.0)
    with pytest.raises(ValueError, match="looks"):
        per_look_confidence(0.99, 0)


def test_the_budget_is_split_between_looks() -> None:
    assert per_look_confidence(0.99, 1) == pytest.approx(0.99)
    assert per_look_confidence(0.99, 8) == pytest.approx(0.99875)
    assert z_for(0.95) == pytest.approx(1.95996, abs=1e-4)


def test_quantile_interpolates_inside_its_bucket_like_prometheus() -> None:
    # 100 requests: 50 up to 10 ms, 40 in 10-20 ms, 10 in 20-50 ms.
    h = Histogram.from_cumulative([(0.01, 50), (0.02, 90), (0.05, 100), (math.inf, 100)])
    assert h.counts == (50, 40, 10, 0)
    assert h.quantile(0.5) == pytest.approx(0.01)
    assert h.quantile(0.95) == pytest.approx(0.035)  # half way through the 20-50 ms bucket
    assert Histogram((0.01, math.inf), (0, 5)).quantile(0.95) == 0.01  # open-ended bucket
    assert Histogram((0.01, math.inf), (0, 0)).quantile(0.95) is None


def test_extrapolated_cumulative_counts_never_give_negative_buckets() -> None:
    h = Histogram.from_cumulative([(0.01, 10.2), (0.02, 10.1), (math.inf, 12)])
    assert min(h.counts) >= 0


def test_histograms_are_compared_on_the_bounds_they_share() -> None:
    fine = Histogram((0.01, 0.02, 0.05, math.inf), (1, 2, 3, 4))
    coarse = Histogram((0.02, math.inf), (5, 5))
    a, b = common_buckets(fine, coarse)
    assert a.bounds == b.bounds == (0.02, math.inf)
    assert a.counts == (3, 7)
    with pytest.raises(ValueError, match="share no bucket"):
        common_buckets(Histogram((0.01,), (1,)), Histogram((0.02,), (1,)))


def _brute_force_u(slower: list[int], faster: list[int]) -> float:
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in slower for b in faster)


def _histogram(latency_buckets: list[int]) -> Histogram:
    counts = [0.0] * len(BOUNDS)
    for i in latency_buckets:
        counts[i] += 1
    return Histogram(BOUNDS, tuple(counts))


bucket_lists = st.lists(st.integers(0, len(BOUNDS) - 1), min_size=1, max_size=40)


@settings(max_examples=50)
@given(slower=bucket_lists, faster=bucket_lists)
def test_u_on_buckets_is_the_pairwise_count_with_ties_as_halves(
    slower: list[int], faster: list[int]
) -> None:
    test = mann_whitney(_histogram(slower), _histogram(faster))
    assert test.u == pytest.approx(_brute_force_u(slower, faster))
    assert 0.0 <= test.p_value <= 1.0
    mirrored = mann_whitney(_histogram(faster), _histogram(slower))
    assert test.probability + mirrored.probability == pytest.approx(1.0)


@settings(max_examples=50)
@given(sample=bucket_lists)
def test_a_version_against_itself_is_never_significant(sample: list[int]) -> None:
    assert mann_whitney(_histogram(sample), _histogram(sample)).p_value >= 0.5


def test_a_shift_of_the_whole_distribution_is_significant_and_its_reverse_is_not() -> None:
    stable = Histogram(BOUNDS, (300, 600, 90, 10, 0, 0))
    slow = Histogram(BOUNDS, (0, 30, 300, 600, 60, 10))
    assert mann_whitney(slow, stable).p_value < 1e-9
    assert mann_whitney(stable, slow).p_value > 0.999


def test_the_variance_carries_the_tie_correction() -> None:
    # slower in buckets [1, 1, 2], faster in [0, 1]: U = 5, ties (1, 3, 1) -> variance 2.4.
    test = mann_whitney(_histogram([1, 1, 2]), _histogram([0, 1]))
    assert test.u == 5
    assert test.z == pytest.approx((5 - 3 - 0.5) / math.sqrt(2.4))


def test_everything_in_one_bucket_tells_nothing_and_is_not_an_error() -> None:
    one = Histogram(BOUNDS, (0, 5, 0, 0, 0, 0))
    same = mann_whitney(one, Histogram(BOUNDS, (0, 7, 0, 0, 0, 0)))
    assert (same.z, same.p_value, same.probability) == (0.0, 0.5, 0.5)


def test_bucket_index_follows_le() -> None:
    assert bucket_index(BOUNDS, 0.01) == 0
    assert bucket_index(BOUNDS, 0.0100001) == 1
    assert bucket_index(BOUNDS, 99.0) == len(BOUNDS) - 1


def test_requests_to_show_below_is_the_first_sample_whose_bound_clears_the_limit() -> None:
    n = requests_to_show_below(0.005, 0.05, 0.95)
    assert n is not None
    assert wilson_bounds(0.005 * n, n, 0.5, 0.95).high < 0.05
    assert wilson_bounds(0.005 * (n - 1), n - 1, 0.5, 0.95).high >= 0.05
    assert requests_to_show_below(0.05, 0.05, 0.95) is None  # at the limit: never
    assert requests_to_show_below(0.0, 0.05, 0.8) < requests_to_show_below(0.0, 0.05, 0.95)  # type: ignore[operator]


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.0, 0.045), level=st.floats(0.5, 0.999))
def test_a_lower_rate_never_needs_more_requests(rate: float, level: float) -> None:
    lower = requests_to_show_below(rate / 2, 0.05, level)
    higher = requests_to_show_below(rate, 0.05, level)
    assert lower is not None
    assert higher is not None
    assert lower <= higher
