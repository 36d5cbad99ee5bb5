"""A real Prometheus scraping demo app versions found through the file_sd targets file.

All versions start before Prometheus so one service-discovery round (Prometheus throttles target
updates to every 5 s) covers every test of the module.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from deployflow.analysis import MetricSample
from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.prometheus import MetricQueries, PrometheusMetrics
from deployflow.sandbox.demo_app import FAULTS_ENV
from deployflow.sandbox.prometheus import LocalPrometheus
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND
from deployflow.stats import Histogram

pytestmark = pytest.mark.integration

# Enough that a stall of a few requests on a loaded machine (its scheduler pausing one version's
# process for tens of ms) does not move a version's P95: 40 once gave two healthy versions 2.3x.
REQUESTS_PER_VERSION = 200
FAULTS = {"v3-bad": {"error_rate": 0.5}, "v4-slow": {"latency_ms": 120}}


@dataclass
class Scraped:
    prometheus: LocalPrometheus
    target: LocalProcessTarget


def _send(base_url: str, count: int) -> None:
    with httpx.Client(base_url=base_url, timeout=5.0) as client, ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: client.get(("/", "/api/items", "/api/checkout")[i % 3]), range(count)
            )
        )


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    state = tmp_path_factory.mktemp("scraped")
    target = LocalProcessTarget(
        DEMO_APP_COMMAND,
        state_dir=state / "apps",
        env={FAULTS_ENV: json.dumps(FAULTS)},
        scrape_targets_file=state / "targets.json",
    )
    try:
        instances = [target.start(v) for v in ("v1", "v2", "v3-bad", "v4-slow")]
        with LocalPrometheus(state / "prometheus", state / "targets.json") as prometheus:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda i: _send(i.base_url, REQUESTS_PER_VERSION), instances))
            yield Scraped(prometheus, target)
    finally:
        target.stop_all()


def _by(prometheus: LocalPrometheus, promql: str, label: str) -> dict[str, float]:
    return {row["metric"][label]: float(row["value"][1]) for row in prometheus.query(promql)}


def _wait_for_counts(prometheus: LocalPrometheus, promql: str, label: str, expected: set[str]):
    """Poll until every expected series reports all requests sent (data comes a scrape later)."""

    def probe():
        counts = _by(prometheus, promql, label)
        complete = all(counts.get(k) == REQUESTS_PER_VERSION for k in expected)
        return counts if complete else None

    return wait_for(probe, timeout=25, interval=0.25, what=f"{expected} scraped")


def test_instant_query_by_version_returns_each_versions_requests(scraped):
    counts = _wait_for_counts(
        scraped.prometheus,
        "sum by (version) (deployflow_demo_http_requests_total)",
        "version",
        {"v1", "v2"},
    )
    assert counts["v1"] == counts["v2"] == REQUESTS_PER_VERSION
    # The file_sd label the target writes is attached to the scraped series too.
    labelled = _by(
        scraped.prometheus,
        'sum by (deployflow_version) (deployflow_demo_http_requests_total{version="v2"})',
        "deployflow_version",
    )
    assert labelled == {"v2": REQUESTS_PER_VERSION}


def test_injected_errors_show_as_5xx(scraped):
    _wait_for_counts(
        scraped.prometheus,
        "sum by (version) (deployflow_demo_http_requests_total)",
        "version",
        {"v3-bad"},
    )
    by_code = _by(
        scraped.prometheus,
        'sum by (code) (deployflow_demo_http_requests_total{version="v3-bad"})',
        "code",
    )
    assert set(by_code) == {"200", "500"}
    assert 0.2 * REQUESTS_PER_VERSION <= by_code["500"] <= 0.8 * REQUESTS_PER_VERSION
    healthy = _by(
        scraped.prometheus,
        'sum by (code) (deployflow_demo_http_requests_total{version="v1"})',
        "code",
    )
    assert healthy == {"200": REQUESTS_PER_VERSION, "500": 0}  # error series start at 0


def test_p95_of_healthy_versions_agree_and_injected_latency_stands_out(scraped):
    _wait_for_counts(
        scraped.prometheus,
        "sum by (version) (deployflow_demo_http_request_duration_seconds_count)",
        "version",
        {"v1", "v2", "v4-slow"},
    )
    p95 = _by(
        scraped.prometheus,
        "histogram_quantile(0.95, sum by (version, le) "
        "(deployflow_demo_http_request_duration_seconds_bucket))",
        "version",
    )
    # The deploy rolls back when canary P95 > 2x stable P95: healthy versions stay below. (One
    # bucket apart is 1.5x, which a loaded machine produces: the assertion is the policy line.)
    assert 0.01 < p95["v1"] < 0.05
    assert 0.5 < p95["v2"] / p95["v1"] < 2.0
    assert p95["v4-slow"] > 2 * p95["v1"]


# -- deployflow's PrometheusMetrics provider with the queries the example spec ships -------------

EXAMPLE_QUERIES = yaml.safe_load(
    (Path(__file__).parents[3] / "examples" / "sandbox.yaml").read_text()
)["metrics"]["queries"]


def test_example_queries_measure_error_rate_latency_and_count(scraped):
    _wait_for_counts(
        scraped.prometheus,
        "sum by (version) (deployflow_demo_http_requests_total)",
        "version",
        {"v1", "v3-bad"},
    )
    # The fixture's requests came before the first scrape; increase() only sees what follows.
    instances = {i.version: i for i in scraped.target.instances()}
    _send(instances["v3-bad"].base_url, 40)
    _send(instances["v1"].base_url, 40)
    metrics = PrometheusMetrics(scraped.prometheus.url, MetricQueries(**EXAMPLE_QUERIES))

    def settled(version: str) -> MetricSample:
        def probe() -> MetricSample | None:
            sample = metrics.sample(version, 300)
            return sample if sample.requests and sample.requests >= 36 else None

        return wait_for(probe, timeout=15, interval=0.25, what=f"{version}'s requests scraped")

    bad = settled("v3-bad")
    assert bad.error is None
    assert bad.error_rate == pytest.approx(0.5, abs=0.05)  # rate() extrapolates per series
    assert bad.requests >= 36  # at least the 40 just sent (increase() extrapolates)
    healthy = settled("v1")
    assert healthy.error_rate == 0.0  # "or vector(0)": no errors is 0, not "no data"
    assert healthy.p95_seconds is not None
    assert 0.01 < healthy.p95_seconds < 0.05
    # The histogram: one (le, cumulative count) pair per bucket, ending with +Inf at the total.
    histogram = Histogram.from_cumulative(list(healthy.buckets))
    assert histogram.bounds[-1] == math.inf
    assert histogram.total == pytest.approx(healthy.requests, rel=0.05)
    assert histogram.quantile(0.95) == pytest.approx(healthy.p95_seconds, rel=0.3)
    assert metrics.sample("never-deployed", 300) == MetricSample(None, None, None)


def test_unreachable_prometheus_is_an_error_sample_not_an_exception():
    metrics = PrometheusMetrics(
        f"http://127.0.0.1:{free_port()}", MetricQueries(**EXAMPLE_QUERIES), timeout=2
    )
    started = time.monotonic()
    sample = metrics.sample("v1", 60)
    assert sample.error is not None
    # In words a person can act on, naming the backend (deployflow.error_words).
    assert "refused the connection" in sample.error
    assert sample.error.startswith("Prometheus at http://127.0.0.1:")
    assert time.monotonic() - started < 5  # no hidden retries: the analysis owns the policy
    assert metrics.p95("v1", 60).value is None


def test_rejected_query_is_an_error_sample(scraped):
    queries = dict(EXAMPLE_QUERIES, request_count="sum(rate(x{version='{version}'}[{window}])")
    sample = PrometheusMetrics(scraped.prometheus.url, MetricQueries(**queries)).sample("v1", 60)
    assert sample.error is not None
