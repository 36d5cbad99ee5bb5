"""The real backends pass the contract tests the fakes pass: local processes, HAProxy, nginx,
Prometheus (by version, and by slot), the access logs of the real HAProxy and nginx, and Slack
through slack-sdk against the local Slack Web API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.processes import free_port
from deployflow.providers.access_log import AccessLogMetrics
from deployflow.providers.base import Instance
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.prometheus import MetricQueries, PrometheusMetrics
from deployflow.providers.slots import SlotHistory
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx
from deployflow.sandbox.prometheus import LocalPrometheus
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND
from tests.contracts import MetricsContract, NotifierContract, RouterContract, TargetContract

QUERIES = MetricQueries(
    error_rate='sum(rate(deployflow_demo_http_requests_total{version="{version}",code=~"5.."}'
    '[{window}])) / sum(rate(deployflow_demo_http_requests_total{version="{version}"}[{window}]))',
    p95_latency="histogram_quantile(0.95, sum by (le) (rate("
    'deployflow_demo_http_request_duration_seconds_bucket{version="{version}"}[{window}])))',
    request_count='sum(increase(deployflow_demo_http_requests_total{version="{version}"}[{window}]))',
    latency_buckets="sum by (le) (increase("
    'deployflow_demo_http_request_duration_seconds_bucket{version="{version}"}[{window}]))',
    requests_by_endpoint="sum by (path, code) (increase("
    'deployflow_demo_http_requests_total{version="{version}"}[{window}]))',
)


class TestLocalProcessTarget(TargetContract):
    @pytest.fixture
    def target(self, tmp_path: Path) -> Iterator[LocalProcessTarget]:
        target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path)
        yield target
        target.stop_all()


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHAProxy]:
    with LocalHAProxy(tmp_path_factory.mktemp("contract-haproxy"), access_log=True) as proxy:
        yield proxy


class TestHAProxyRouter(RouterContract):
    @pytest.fixture
    def router(self, haproxy: LocalHAProxy):
        return haproxy.router()

    @pytest.fixture
    def instances(self) -> tuple[Instance, Instance]:
        # HAProxy points its slots at addresses; nothing needs to listen for the split to hold.
        return Instance("v1", "127.0.0.1", free_port()), Instance("v2", "127.0.0.1", free_port())


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNginx]:
    with LocalNginx(tmp_path_factory.mktemp("contract-nginx")) as server:
        yield server


class TestNginxRouter(RouterContract):
    @pytest.fixture
    def router(self, nginx: LocalNginx):
        return nginx.router()

    @pytest.fixture
    def instances(self) -> tuple[Instance, Instance]:
        # nginx only needs the addresses to parse; nothing needs to listen for the split to hold.
        return Instance("v1", "127.0.0.1", free_port()), Instance("v2", "127.0.0.1", free_port())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    state = tmp_path_factory.mktemp("contract-prometheus")
    with LocalPrometheus(state / "prometheus", state / "targets.json") as server:
        yield server


class TestPrometheusMetrics(MetricsContract):
    @pytest.fixture
    def metrics(self, prometheus: LocalPrometheus) -> PrometheusMetrics:
        return PrometheusMetrics(prometheus.url, QUERIES, timeout=3)

    @pytest.fixture
    def unreachable_metrics(self) -> PrometheusMetrics:
        return PrometheusMetrics(f"http://127.0.0.1:{free_port()}", QUERIES, timeout=1)


# HAProxy's exporter labels by server: the slot the version sat in.
SLOT_QUERIES = MetricQueries(
    error_rate='sum(rate(haproxy_server_http_responses_total{server="{slot}",code="5xx"}'
    '[{window}])) / sum(rate(haproxy_server_http_responses_total{server="{slot}"}[{window}]))',
    p95_latency='max(haproxy_server_response_time_average_seconds{server="{slot}"})',
    request_count='sum(increase(haproxy_server_http_responses_total{server="{slot}"}[{window}]))',
    requests_by_endpoint="sum by (code) (increase("
    'haproxy_server_http_responses_total{server="{slot}"}[{window}]))',
)


class TestPrometheusMetricsBySlot(MetricsContract):
    @pytest.fixture
    def metrics(self, prometheus: LocalPrometheus) -> PrometheusMetrics:
        return PrometheusMetrics(prometheus.url, SLOT_QUERIES, timeout=3)

    @pytest.fixture
    def unreachable_metrics(self) -> PrometheusMetrics:
        history = SlotHistory(None)
        history.record_slots(0.0, [("stable", Instance("v1", "127.0.0.1", 9001))])
        url = f"http://127.0.0.1:{free_port()}"
        return PrometheusMetrics(url, SLOT_QUERIES, timeout=1, slot_history=history)


def _history(tmp_path: Path) -> SlotHistory:
    history = SlotHistory(tmp_path / "slots.jsonl")
    history.record_slots(0.0, [("stable", Instance("v1", "127.0.0.1", free_port()))])
    return history


class TestNginxAccessLogMetrics(MetricsContract):
    @pytest.fixture
    def metrics(self, nginx: LocalNginx, tmp_path: Path) -> AccessLogMetrics:
        return AccessLogMetrics(nginx.access_log, "nginx", _history(tmp_path))

    @pytest.fixture
    def unreachable_metrics(self, tmp_path: Path) -> AccessLogMetrics:
        return AccessLogMetrics(tmp_path / "no-such.log", "nginx", _history(tmp_path))


class TestHAProxyAccessLogMetrics(MetricsContract):
    @pytest.fixture
    def metrics(self, haproxy: LocalHAProxy, tmp_path: Path) -> AccessLogMetrics:
        return AccessLogMetrics(haproxy.access_log, "haproxy", _history(tmp_path))

    @pytest.fixture
    def unreachable_metrics(self, tmp_path: Path) -> AccessLogMetrics:
        return AccessLogMetrics(tmp_path / "no-such.log", "haproxy", _history(tmp_path))


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token="xoxb-contract", channels=["deploys"]) as api:
        yield api


class TestSlackNotifier(NotifierContract):
    @pytest.fixture
    def notifier(self, slack: FakeSlackAPI) -> SlackNotifier:
        return SlackNotifier(SecretStr("xoxb-contract"), "#deploys", base_url=slack.base_url)

    @pytest.fixture
    def failing_notifier(self, slack: FakeSlackAPI) -> SlackNotifier:
        return SlackNotifier(SecretStr("xoxb-wrong"), "#deploys", base_url=slack.base_url)
