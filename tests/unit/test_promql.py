from __future__ import annotations

import math

import pytest

from deployflow.providers.prometheus import (
    MetricQueries,
    _buckets,
    _scalar,
    promql_duration,
    render_promql,
)
from deployflow.spec import SpecError

pytestmark = pytest.mark.unit


def test_placeholders_are_replaced_and_label_braces_kept() -> None:
    query = render_promql(
        'sum(rate(http_total{version="{version}",code=~"5.."}[{window}]))', "v2", 60
    )
    assert query == 'sum(rate(http_total{version="v2",code=~"5.."}[60s]))'


@pytest.mark.parametrize(("seconds", "text"), [(60, "60s"), (1.5, "1500ms"), (600, "600s")])
def test_windows_are_integers_with_units(seconds: float, text: str) -> None:
    assert promql_duration(seconds) == text


def test_a_version_cannot_inject_promql() -> None:
    with pytest.raises(SpecError):
        render_promql('x{version="{version}"}', 'v1"} or vector(1) or x{a="', 60)


def test_scalar_of_vector_scalar_empty_and_nan() -> None:
    assert _scalar([{"metric": {}, "value": [1, "0.25"]}]) == 0.25
    assert _scalar({"resultType": "scalar", "value": [1, "3"]}) == 3.0
    assert _scalar([]) is None
    assert _scalar([{"metric": {}, "value": [1, "NaN"]}]) is None


def test_buckets_of_a_sum_by_le_answer_in_bound_order() -> None:
    answer = [
        {"metric": {"le": "+Inf"}, "value": [1, "40"]},
        {"metric": {"le": "0.05"}, "value": [1, "38.5"]},
        {"metric": {"le": "0.01"}, "value": [1, "12"]},
        {"metric": {}, "value": [1, "3"]},  # no le: not a bucket
        {"metric": {"le": "0.1"}, "value": [1, "NaN"]},
    ]
    assert _buckets(answer) == ((0.01, 12.0), (0.05, 38.5), (math.inf, 40.0))


def test_buckets_without_the_open_bucket_or_data_are_none() -> None:
    assert _buckets([{"metric": {"le": "0.05"}, "value": [1, "3"]}]) == ()
    assert _buckets([]) == ()
    assert _buckets({"resultType": "scalar", "value": [1, "3"]}) == ()


def test_the_bucket_query_is_optional_but_must_select_the_version() -> None:
    base = {"error_rate": "{version}", "p95_latency": "{version}", "request_count": "{version}"}
    assert MetricQueries(**base).latency_buckets is None
    with pytest.raises(ValueError, match="latency_buckets"):
        MetricQueries(**base, latency_buckets="sum by (le) (x_bucket)")


def test_prometheus_credentials_never_reach_descriptions_or_errors():
    from deployflow.providers.prometheus import MetricQueries, PrometheusMetrics

    queries = MetricQueries(
        error_rate="{version}", p95_latency="{version}", request_count="{version}"
    )
    metrics = PrometheusMetrics("http://reader:s3cret@127.0.0.1:9/prom", queries, timeout=1)
    assert metrics.describe() == "prometheus at http://***@127.0.0.1:9/prom"
    sample = metrics.sample("v1", 30)
    assert sample.error is not None
    assert "s3cret" not in sample.error
