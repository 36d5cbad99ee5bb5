"""The live checks' pure parts (metric names in PromQL, a query answer judged, the live version
found from the router and the target) and the checks through in-memory backends."""

from __future__ import annotations

import httpx
import pytest

from deployflow.fakes.backends import FakeAlerts, FakeService
from deployflow.live import LiveBackends, check_live, find_live
from deployflow.providers.base import (
    AlertsRead,
    DependencyStatus,
    FiringAlert,
    Instance,
    LiveCheck,
    RouterState,
)
from deployflow.providers.prometheus import judge_query_answer, metric_names


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        (
            '(sum(rate(app_requests_total{version="v1",code=~"5.."}[1m])) or vector(0))'
            ' / sum(rate(app_requests_total{version="v1"}[1m]))',
            ["app_requests_total"],
        ),
        (
            'histogram_quantile(0.95, sum by (le) (rate(app_seconds_bucket{version="v1"}[1m])))',
            ["app_seconds_bucket"],
        ),
        ("up[5m] offset 1m", ["up"]),
        ('sum by (path, code) (increase(http_total{job="a:b"}[30s]))', ["http_total"]),
        ('rate(ns:app_requests:rate1m{version="v1"}[1m])', ["ns:app_requests:rate1m"]),
        ("vector(0)", []),
    ],
)
def test_metric_names_are_the_selected_series_not_functions_or_labels(promql, names):
    assert metric_names(promql) == names


def test_a_query_answer_is_judged_for_data_and_range():
    assert judge_query_answer("error_rate", None, "v1") == "no data for v1"
    assert judge_query_answer("latency_buckets", (), "v1") == "no data for v1"
    assert judge_query_answer("error_rate", 0.0, "v1") is None
    assert "not a fraction" in (judge_query_answer("error_rate", 12.0, "v1") or "")
    assert "negative" in (judge_query_answer("p95_latency", -1.0, "v1") or "")
    assert judge_query_answer("request_count", 40.0, "v1") is None


V1 = Instance("v1", "127.0.0.1", 9001)


def test_the_live_version_is_what_the_stable_slot_points_at():
    checks, live = find_live(RouterState("127.0.0.1:9001", None, 0), [V1])
    assert live == V1
    assert checks == [LiveCheck("live version", "ok", "v1 at 127.0.0.1:9001")]


def test_a_stable_slot_the_target_does_not_list_fails():
    checks, live = find_live(RouterState("127.0.0.1:9999", None, 0), [V1])
    assert live is None
    assert [c.status for c in checks] == ["fail"]
    assert "127.0.0.1:9999, which the target does not list" in checks[0].detail


def test_no_stable_is_a_first_release_and_a_canary_with_traffic_a_warning():
    checks, live = find_live(RouterState(None, "127.0.0.1:9002", 10), [])
    assert live is None
    assert [(c.name, c.status) for c in checks] == [
        ("router.canary", "warn"),
        ("live version", "warn"),
    ]


class Down:
    name = "payments"

    def check(self) -> DependencyStatus:
        return DependencyStatus("payments", False, "http://payments/health: HTTP 503")

    def describe(self) -> str:
        return "payments"


def checked(service: FakeService, **extra: object):
    backends = LiveBackends(
        target=service.target, router=service.router, metrics=service.metrics, **extra
    )
    with httpx.Client(transport=service.transport) as http:
        return check_live(backends, 60.0, http)


def test_every_check_passes_on_a_healthy_service():
    service = FakeService()
    service.run_stable("v1")
    report = checked(service, alerts=FakeAlerts())
    assert report.passed, report.lines()
    assert report.live_version == "v1"
    assert [c.name for c in report.checks] == [
        "target",
        "router",
        "router.frontend_url",
        "live version",
        "health",
        "metrics",
        "alerts",
    ]
    assert report.summary() == "all 7 live checks passed"


def test_each_failure_is_named_and_fails_the_report():
    service = FakeService()
    service.run_stable("v1")
    service.behave("v1", healthy=False)
    service.metrics.down = True
    firing = AlertsRead((FiringAlert("HighLatency"),))
    report = checked(service, dependencies=[Down()], alerts=FakeAlerts(firing))
    failed = {c.name: c.detail for c in report.failed}
    assert set(failed) == {"health", "metrics", "dependencies.payments"}
    assert "HTTP 500" in failed["health"]
    assert "HTTP 503" in failed["dependencies.payments"]
    assert next(c for c in report.checks if c.name == "alerts").status == "warn"
    assert report.summary().startswith("3 live check(s) failed: health: ")
    assert report.to_dict()["passed"] is False


def test_an_unreachable_router_fails_and_nothing_is_measured():
    service = FakeService()
    service.run_stable("v1")
    service.router.down = True
    report = checked(service)
    assert {c.name for c in report.failed} == {"router", "router.frontend_url"}
    assert (next(c for c in report.checks if c.name == "metrics").status) == "warn"
    assert service.metrics.queries == []
