"""Metrics from a Prometheus server, through prometheus-api-client.

A query that fails (server down, bad PromQL, timeout) does not raise: it becomes a
``MetricSample`` with ``error`` set, which the analysis counts as an Error measurement.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from deployflow.analysis import MetricSample
from deployflow.error_words import in_words
from deployflow.providers.base import (
    BuildContext,
    LiveCheck,
    MetricHistory,
    Points,
    Reading,
    RequestBreakdown,
)
from deployflow.providers.slots import SlotHistory, default_history_path
from deployflow.spec_types import Duration, HttpUrl, StrictModel, validate_version

if TYPE_CHECKING:
    import requests


class MetricQueries(StrictModel):
    """PromQL templates. ``{version}``, ``{slot}`` and ``{window}`` are replaced; nothing else is
    touched. ``{slot}`` is the router slot the version sat in (``stable``, ``canary``: HAProxy's
    server names), for exporters that label by slot, such as HAProxy's own."""

    error_rate: str = Field(description="Fraction of requests that failed, 0..1.")
    p95_latency: str = Field(description="95th percentile latency in seconds.")
    request_count: str = Field(description="Requests served in the window.")
    latency_buckets: str | None = Field(
        None,
        description=(
            "Requests per latency histogram bucket in the window, one series per 'le' label, "
            "e.g. sum by (le) (increase(http_request_duration_seconds_bucket{...}[{window}])). "
            "With it the canary's latency is compared with the stable's over the same window "
            "(rank test and P95 ratio); without it, against the pre-deploy baseline."
        ),
    )

    requests_by_endpoint: str | None = Field(
        None,
        description=(
            "Requests in the window by endpoint and status code, one series per pair, e.g. "
            'sum by (path, code) (increase(http_requests_total{version="{version}"}[{window}])).'
            " The endpoint is read from the first of the labels path, endpoint, handler, route, "
            "uri; the status from code, status, status_code. The incident report's breakdown."
        ),
    )

    @field_validator(
        "error_rate", "p95_latency", "request_count", "latency_buckets", "requests_by_endpoint"
    )
    @classmethod
    def _has_version(cls, value: str | None) -> str | None:
        if value is not None and "{version}" not in value and "{slot}" not in value:
            raise ValueError(
                "the query must select the version with the {version} placeholder (a label "
                "holding the version) or {slot} (a label holding the router slot)"
            )
        return value

    def use_slots(self) -> bool:
        """True when a query selects by router slot."""
        return any("{slot}" in (q or "") for q in self.model_dump().values())


class PrometheusMetricsSpec(StrictModel):
    """Metrics come from a Prometheus server's HTTP API."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("slot_history",)

    kind: Literal["prometheus"] = Field(description="Prometheus HTTP API.")
    url: HttpUrl = Field(description="Base URL of the Prometheus server.")
    queries: MetricQueries
    timeout: Duration = Field(5.0, description="Timeout of one query.")
    slot_history: Path | None = Field(
        None,
        description="With {slot} in the queries: where deployflow records which version it put "
        "in which router slot (one line per traffic change); default "
        "<data dir>/slots/<service>.jsonl, the data dir being DEPLOYFLOW_DATA_DIR or "
        "~/.deployflow.",
    )


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if sep and "@" in authority:
        return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"
    return url


def promql_duration(seconds: float) -> str:
    """Prometheus durations take integers with a unit: 90s, 1500ms."""
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError("a query window must be positive")
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


_SLOT = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def render_promql(
    template: str, version: str, window_seconds: float, slot: str | None = None
) -> str:
    """Replace ``{version}``, ``{slot}`` and ``{window}`` in a PromQL template.

    ``str.format`` cannot be used: PromQL's own label matchers are written in braces. The version
    and the slot are validated first so they cannot break out of their label matchers.

    Raises:
        ValueError: The template names ``{slot}`` and no slot (or a bad one) is given.
    """
    validate_version(version)
    if "{slot}" in template:
        if slot is None or not _SLOT.fullmatch(slot):
            raise ValueError(f"the query selects by {{slot}} and the slot is {slot!r}")
        template = template.replace("{slot}", slot)
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


def _buckets(result: Any) -> tuple[tuple[float, float], ...]:
    """(upper bound, cumulative count) pairs of a ``sum by (le)`` answer, in bound order; series
    without a numeric ``le`` or a number are left out, and an answer without ``+Inf`` is none."""
    if not isinstance(result, list):
        return ()
    pairs: list[tuple[float, float]] = []
    for series in result:
        try:
            bound = float(series["metric"]["le"])
            count = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isnan(bound) or math.isnan(count) or math.isinf(count):
            continue
        pairs.append((bound, count))
    if not any(math.isinf(bound) for bound, _ in pairs):
        return ()
    return tuple(sorted(pairs))


ENDPOINT_LABELS = ("path", "endpoint", "handler", "route", "uri")
STATUS_LABELS = ("code", "status", "status_code")


def _points(result: Any) -> Points:
    """The values of the first series of a range answer; NaN and infinite points left out."""
    if not isinstance(result, list) or not result:
        return ()
    out: list[tuple[float, float]] = []
    for pair in result[0].get("values", []):
        try:
            t, v = float(pair[0]), float(pair[1])
        except (IndexError, TypeError, ValueError):
            continue
        if not (math.isnan(v) or math.isinf(v)):
            out.append((t, v))
    return tuple(out)


def _label(metric: dict[str, Any], names: tuple[str, ...]) -> str | None:
    return next((str(metric[n]) for n in names if n in metric), None)


def _breakdown_rows(result: Any) -> tuple[tuple[str, str, float], ...]:
    """(endpoint, code, requests) of a ``sum by (path, code)`` answer, most requests first."""
    if not isinstance(result, list):
        return ()
    rows: list[tuple[str, str, float]] = []
    for series in result:
        try:
            metric = series.get("metric", {})
            count = float(series["value"][1])
        except (AttributeError, KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isnan(count) or math.isinf(count) or count <= 0:
            continue
        endpoint = _label(metric, ENDPOINT_LABELS) or "(all)"
        code = _label(metric, STATUS_LABELS) or "(any)"
        rows.append((endpoint, code, count))
    return tuple(sorted(rows, key=lambda r: (-r[2], r[0], r[1])))


@dataclass(frozen=True)
class _Selection:
    """What one query selects: ``{slot}`` (when the template names it), the window and the time
    it is evaluated at (None: now)."""

    slot: str | None
    window_seconds: float
    at: float | None = None


# A metric selector in PromQL: a name followed by its label matchers or its range.
_SELECTOR = re.compile(r"(?<![\w:\"'])([A-Za-z_:][A-Za-z0-9_:]*)\s*[{\[]")
_NOT_METRICS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "offset"})


def metric_names(promql: str) -> list[str]:
    """The metric names a PromQL query selects (``name{...}`` or ``name[...]``), in order, once
    each; label names, functions and keywords are not metric names."""
    names: list[str] = []
    for match in _SELECTOR.finditer(promql):
        name = match.group(1)
        if name not in _NOT_METRICS and name not in names:
            names.append(name)
    return names


def judge_query_answer(name: str, answer: object, version: str) -> str | None:
    """Why the answer of configured query ``name`` cannot serve the judge (None when it can):
    no data, or a figure out of its range (an error rate is a fraction 0..1, a latency is
    seconds)."""
    if answer is None or answer == () or answer == []:
        return f"no data for {version}"
    if isinstance(answer, float):
        if name == "error_rate" and not 0.0 <= answer <= 1.0:
            return f"answered {answer:g}, not a fraction 0..1 (divide the failures by all requests)"
        if name in ("p95_latency", "request_count") and answer < 0:
            return f"answered {answer:g}, a negative figure"
    return None


class PrometheusMetrics:
    """The ``Metrics`` backend for Prometheus.

    A query with ``{slot}`` selects the router slot the version sat in. A window that spans a
    change of slot (a promotion re-points the stable slot at the canary's version) is cut at the
    change: the figures cover the time since the version took its latest slot in the window, so
    no other version's requests are counted as its own.

    Args:
        url: base URL of the Prometheus server.
        queries: PromQL templates from the spec.
        timeout: seconds for one query.
        session: an HTTP session to use (tests and proxies); one is created when omitted.
        slot_history: which version sat in which slot when (needed with ``{slot}``).
        clock: Unix time now (tests pass their own).
    """

    def __init__(
        self,
        url: str,
        queries: MetricQueries,
        timeout: float = 5.0,
        session: requests.Session | None = None,
        slot_history: SlotHistory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Imported here: reading a spec imports every backend module, and only a run needs these.
        import requests
        from prometheus_api_client import PrometheusConnect
        from prometheus_api_client.exceptions import PrometheusApiClientException
        from urllib3.util.retry import Retry

        self.url = url
        # What logs, reports and the Prefect UI show: a URL may carry basic-auth credentials.
        self.display_url = without_credentials(url)
        self.queries = queries
        self.timeout = timeout
        self._clock = clock
        # Only a spec that selects by slot needs the history (and its router changes recorded).
        self.slot_history: SlotHistory | None = None
        if queries.use_slots():
            self.slot_history = slot_history if slot_history is not None else SlotHistory(None)
        self._failures: tuple[type[Exception], ...] = (
            PrometheusApiClientException,
            requests.RequestException,
            ValueError,
        )
        # No retries inside the client: the analysis owns retry policy (consecutive_error_limit).
        self._client = PrometheusConnect(
            url=url, retry=Retry(total=0), session=session, timeout=math.ceil(timeout)
        )

    @classmethod
    def from_spec(cls, spec: PrometheusMetricsSpec, ctx: BuildContext) -> PrometheusMetrics:
        """The metrics backend a spec's ``metrics`` section of kind ``prometheus`` describes."""
        history = None
        if spec.queries.use_slots():
            path = spec.slot_history
            if path is None:
                from deployflow.tracking.db import data_dir  # only a run needs it

                path = default_history_path(data_dir(), ctx.service or "service")
            history = SlotHistory(path)
        return cls(spec.url, spec.queries, timeout=spec.timeout, slot_history=history)

    def describe(self) -> str:
        return f"prometheus at {self.display_url}"

    def _failure(self, exc: BaseException, what: str = "query") -> str:
        """Why a query failed, in words: "Prometheus at URL did not answer within 2 s"; an
        answer Prometheus gave (bad PromQL, an HTTP error) keeps its own text."""
        subject = f"Prometheus at {self.display_url}"
        # The client waits whole seconds (math.ceil, as every query here passes it).
        words = in_words(exc, service=subject, timeout=math.ceil(self.timeout))
        if words.startswith(subject):
            return words
        return f"{what} to {self.display_url} failed: {_short(exc)}"

    def _selection(self, version: str, window_seconds: float, now: float) -> _Selection | None:
        """The slot ``version`` sat in latest within the window, the window cut to its time
        there; None when it sat in no slot (no data)."""
        if self.slot_history is None:
            return _Selection(None, window_seconds)
        spans = self.slot_history.slots_of(version, now - window_seconds, now)
        if not spans:
            return None
        last = spans[-1]
        window = max(last.end - last.start, 1.0)
        at = None if last.end >= now else last.end
        return _Selection(last.slot, window, at)

    def _run(self, template: str, version: str, selection: _Selection) -> Any:
        query = render_promql(template, version, selection.window_seconds, selection.slot)
        params = None if selection.at is None else {"time": f"{selection.at:.3f}"}
        try:
            return self._client.custom_query(query, params=params, timeout=math.ceil(self.timeout))
        except self._failures as exc:
            raise _QueryFailed(self._failure(exc)) from None

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        """Error rate, P95, request count and (when configured) the latency histogram of
        ``version`` over the trailing window."""
        selection = self._selection(version, window_seconds, self._clock())
        if selection is None:
            return MetricSample(None, None, None)
        try:
            requests_seen = _scalar(self._run(self.queries.request_count, version, selection))
            error_rate = _scalar(self._run(self.queries.error_rate, version, selection))
            p95 = _scalar(self._run(self.queries.p95_latency, version, selection))
            buckets: tuple[tuple[float, float], ...] = ()
            if self.queries.latency_buckets is not None:
                buckets = _buckets(self._run(self.queries.latency_buckets, version, selection))
        except _QueryFailed as exc:
            return MetricSample(None, None, None, error=str(exc))
        return MetricSample(
            error_rate=error_rate, p95_seconds=p95, requests=requests_seen, buckets=buckets
        )

    def probe(self, version: str, window_seconds: float) -> list[LiveCheck]:
        """Each configured query run for ``version`` over ``window_seconds``; a query that
        fails or answers no data fails, naming any metric this Prometheus has never seen
        (``MetricsProbe``)."""
        answers: dict[str, object] = {}
        checks: list[LiveCheck] = []
        known: list[str] | None = None
        asked = False
        selection = self._selection(version, window_seconds, self._clock())
        if selection is None:  # {slot} queries, and the history has the version in no slot
            return [
                LiveCheck(
                    "metrics.queries",
                    "fail",
                    f"{version} sat in no router slot in the last {window_seconds:g} s "
                    f"({self.slot_history.describe() if self.slot_history else ''})",
                )
            ]
        params = None if selection.at is None else {"time": f"{selection.at:.3f}"}
        for name in MetricQueries.model_fields:
            template = getattr(self.queries, name)
            if template is None:
                continue
            field = f"metrics.queries.{name}"
            query = render_promql(template, version, selection.window_seconds, selection.slot)
            try:
                result = self._client.custom_query(
                    query, params=params, timeout=math.ceil(self.timeout)
                )
            except self._failures as exc:
                checks.append(LiveCheck(field, "fail", self._failure(exc)))
                continue
            answer: object
            if name == "latency_buckets":
                answer = _buckets(result)
                shown = f"{len(answer)} buckets"
            elif name == "requests_by_endpoint":
                answer = _breakdown_rows(result)
                shown = f"{len(answer)} endpoint/status rows"
            else:
                answer = _scalar(result)
                shown = f"{answer:g}" if isinstance(answer, float) else "no data"
            answers[name] = answer
            problem = judge_query_answer(name, answer, version)
            if problem is None:
                checks.append(LiveCheck(field, "ok", f"{shown} for {version}"))
                continue
            if problem.startswith("no data"):
                if not asked:
                    known, asked = self._known_metrics(), True
                problem += self._why_no_data(name, query, known, answers)
            checks.append(LiveCheck(field, "fail", problem))
        return checks

    def _known_metrics(self) -> list[str] | None:
        """The metric names this Prometheus holds; None when it cannot say."""
        try:
            names = self._client.all_metrics()
        except self._failures:
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    def _why_no_data(
        self, name: str, query: str, known: list[str] | None, answers: dict[str, object]
    ) -> str:
        if known is None:
            return ""
        if not known:
            return f": {self.describe()} holds no metric at all yet (is the service scraped?)"
        unknown = [m for m in metric_names(query) if m not in known]
        if unknown:
            hints = []
            for metric in unknown:
                close = difflib.get_close_matches(metric, known, n=1, cutoff=0.8)
                hint = f" (did you mean {close[0]}?)" if close else ""
                hints.append(f"{metric}{hint}")
            return f": {self.describe()} has no metric " + ", ".join(hints)
        if name == "error_rate" and answers.get("request_count"):
            return (
                " although request_count has data: a version without failed requests must "
                "answer 0 (add `or vector(0)` to the failed-requests part)"
            )
        return " (its metrics exist: check the label that selects the version)"

    def p95(self, version: str, window_seconds: float) -> Reading:
        """P95 latency of ``version`` in seconds over the trailing window."""
        selection = self._selection(version, window_seconds, self._clock())
        if selection is None:
            return Reading(None)
        try:
            return Reading(_scalar(self._run(self.queries.p95_latency, version, selection)))
        except _QueryFailed as exc:
            return Reading(None, error=str(exc))

    def _spans(
        self, version: str, start: float, end: float
    ) -> list[tuple[str | None, float, float]]:
        """(slot, start, end) parts of a time range: the whole range without ``{slot}``."""
        if self.slot_history is None:
            return [(None, start, end)]
        return [(s.slot, s.start, s.end) for s in self.slot_history.slots_of(version, start, end)]

    def history(
        self,
        version: str,
        start: datetime,
        end: datetime,
        step_seconds: float,
        window_seconds: float,
    ) -> MetricHistory:
        """Error rate and P95 of ``version`` from ``start`` to ``end`` (range queries). With
        ``{slot}``, one range per slot the version sat in, each point's window within it."""
        step = promql_duration(max(step_seconds, 0.001))
        validate_version(version)
        series: list[list[tuple[float, float]]] = [[], []]
        try:
            for slot, lo, hi in self._spans(version, start.timestamp(), end.timestamp()):
                if slot is not None:
                    lo += window_seconds  # a point's window must not reach the slot's previous
                    if lo > hi:
                        continue
                for i, template in enumerate((self.queries.error_rate, self.queries.p95_latency)):
                    query = render_promql(template, version, window_seconds, slot)
                    result = self._client.custom_query_range(
                        query,
                        start_time=datetime.fromtimestamp(lo, UTC),
                        end_time=datetime.fromtimestamp(hi, UTC),
                        step=step,
                        timeout=math.ceil(self.timeout),
                    )
                    series[i].extend(_points(result))
        except self._failures as exc:
            return MetricHistory(error=self._failure(exc, "range query"))
        return MetricHistory(error_rate=tuple(series[0]), p95_seconds=tuple(series[1]))

    def breakdown(self, version: str, start: datetime, end: datetime) -> RequestBreakdown:
        """Requests of ``version`` between ``start`` and ``end`` by endpoint and status code
        (``queries.requests_by_endpoint`` evaluated at ``end`` over the whole range; with
        ``{slot}``, over each part the version sat in one slot, summed)."""
        template = self.queries.requests_by_endpoint
        if template is None:
            return RequestBreakdown(error="metrics.queries.requests_by_endpoint is not configured")
        totals: dict[tuple[str, str], float] = {}
        try:
            for slot, lo, hi in self._spans(version, start.timestamp(), end.timestamp()):
                selection = _Selection(slot, max(hi - lo, 1.0), hi)
                for endpoint, code, count in _breakdown_rows(
                    self._run(template, version, selection)
                ):
                    totals[(endpoint, code)] = totals.get((endpoint, code), 0.0) + count
        except _QueryFailed as exc:
            return RequestBreakdown(error=str(exc))
        rows = [(e, c, n) for (e, c), n in totals.items()]
        return RequestBreakdown(rows=tuple(sorted(rows, key=lambda r: (-r[2], r[0], r[1]))))


class _QueryFailed(Exception):
    pass


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
