from __future__ import annotations

import pytest

from deployflow.providers.prometheus import _scalar, promql_duration, render_promql
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
