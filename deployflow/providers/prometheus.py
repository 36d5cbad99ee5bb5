"""Metrics from a Prometheus server, through prometheus-api-client.

A query that fails (server down, bad PromQL, timeout) does not raise: it becomes a
``MetricSample`` with ``error`` set, which the analysis counts as an Error measurement.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from deployflow.analysis import MetricSample
from deployflow.spec import MetricQueries, validate_version


class MetricsProvider(Protocol):
    """Measures one version of the service over a trailing window."""

    def sample(self, version: str, window_seconds: float) -> MetricSample: ...

    def p95(self, version: str, window_seconds: float) -> tuple[float | None, str | None]:
        """P95 latency in seconds (None when no data) and an error message when the query
        failed."""
        ...


def promql_duration(seconds: float) -> str:
    """Prometheus durations take integers with a unit: 90s, 1500ms."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError("a query window must be positive")
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


def render_promql(template: str, version: str, window_seconds: float) -> str:
    """Replace ``{version}`` and ``{window}`` in a PromQL template.

    ``str.format`` cannot be used: PromQL's own label matchers are written in braces. The version
    is validated first so it cannot break out of its label matcher.
    """
    validate_version(version)
    return template.replace("{version}", version).replace(
        "{window}", promql_duration(window_seconds)
    )


def _scalar(result: Any) -> float | None:
    """First value of an instant-vector or scalar answer; None for empty or NaN."""
    if isinstance(result, list):
        if not result:
            return None
        value = result[0].get("value", [None, None])[1]
    elif isinstance(result, dict) and "value" in result:
        value = result["value"][1]
    else:
        value = None
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) or math.isinf(number) else number


class PrometheusMetrics:
    """The ``MetricsProvider`` for Prometheus.

    Args:
        url: base URL of the Prometheus server.
        queries: PromQL templates from the spec.
        timeout: seconds for one query.
        session: an HTTP session to use (tests and proxies); one is created when omitted.
    """

    def __init__(
        self,
        url: str,
        queries: MetricQueries,
        timeout: float = 5.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self.queries = queries
        self.timeout = timeout
        # No retries inside the client: the analysis owns retry policy (consecutive_error_limit).
        self._client = PrometheusConnect(
            url=url, retry=Retry(total=0), session=session, timeout=math.ceil(timeout)
        )

    def _query(self, template: str, version: str, window_seconds: float) -> float | None:
        query = render_promql(template, version, window_seconds)
        return _scalar(self._client.custom_query(query, timeout=math.ceil(self.timeout)))

    def _guard(self, template: str, version: str, window_seconds: float) -> float | None:
        try:
            return self._query(template, version, window_seconds)
        except (PrometheusApiClientException, requests.RequestException, ValueError) as exc:
            raise _QueryFailed(f"query to {self.url} failed: {_short(exc)}") from None

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        """Error rate, P95 and request count of ``version`` over the trailing window."""
        try:
            requests_seen = self._guard(self.queries.request_count, version, window_seconds)
            error_rate = self._guard(self.queries.error_rate, version, window_seconds)
            p95 = self._guard(self.queries.p95_latency, version, window_seconds)
        except _QueryFailed as exc:
            return MetricSample(None, None, None, error=str(exc))
        return MetricSample(error_rate=error_rate, p95_seconds=p95, requests=requests_seen)

    def p95(self, version: str, window_seconds: float) -> tuple[float | None, str | None]:
        try:
            return self._guard(self.queries.p95_latency, version, window_seconds), None
        except _QueryFailed as exc:
            return None, str(exc)


class _QueryFailed(Exception):
    pass


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
