"""Metrics from the router's own access log, for a service that exports none.

Every request the router passes on is a line in its access log, in a format the docs give (one
per router, ``NGINX_LOG_FORMAT`` and ``HAPROXY_LOG_FORMAT``): the time, the address of the server
that answered, its status code, its response time and the URI. A line names an address, never a
version; the version is the one deployflow put at that address then (``SlotHistory``, written by
the run's router as it changes the split), so a window that spans a promotion is attributed
right, request by request.

How the log is read:

- Lazily, at each look: the bytes appended since the previous look are parsed (a look at 5,000
  requests/s every 30 s parses 150,000 lines; ``bench/bench_access_log.py`` gives the rate).
- A window that reaches before what was read is read back: the log is searched by time (lines
  are in time order, give or take the requests in flight) and only that part is parsed, so the
  first look after a deploy starts reads the baseline's minutes, not the whole file.
- Rotation: a log renamed away keeps being read until its writer has reopened the new one (it
  stops growing); a log truncated in place (copytruncate) is read again from its start. What was
  in a file rotated away before it was first read is not read back.
- Requests are kept as per-second figures per address (counts, 5xx, a latency histogram on a
  fixed grid, requests by endpoint and status), seconds older than ten minutes merged into ten
  seconds, nothing older than three hours: memory stays flat whatever the traffic.

Failures are data: a log that is missing or unreadable is ``MetricSample.error`` (an Error
measurement, which never promotes); a log holding many lines and not one in the deployflow
format is an error too (a wrong ``log_format`` would otherwise look like a service without
traffic); a version without requests in the window is no data.
"""

from __future__ import annotations

import bisect
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from deployflow.analysis import MetricSample
from deployflow.providers.base import (
    BuildContext,
    MetricHistory,
    Reading,
    RequestBreakdown,
)
from deployflow.providers.slots import SlotHistory, SlotIndex, default_history_path
from deployflow.spec_types import StrictModel, validate_version
from deployflow.stats import Histogram

MARK = "deployflow|"
# The formats the docs give; the fields after the mark are separated by '|', the URI last (it
# may hold a '|' itself). Whatever a syslog daemon or journald writes before the mark is skipped.
NGINX_LOG_FORMAT = (
    "deployflow|$msec|$upstream_addr|$upstream_status|$upstream_response_time|$request_uri"
)
HAPROXY_LOG_FORMAT = "deployflow|%Ts.%ms|%si:%sp|%ST|%Ta|%HU"

# Latency histogram bounds in milliseconds: every millisecond up to 26 ms, then 5% apart, to a
# minute. The logs give milliseconds, so below 26 ms the histogram is exact, above within 5%.
_BOUNDS_MS: tuple[int, ...] = tuple(
    sorted({max(1, round(1.05**k)) for k in range(0, 226)} | {60_000})
)
LATENCY_BOUNDS: tuple[float, ...] = (*(b / 1000.0 for b in _BOUNDS_MS), math.inf)
# Milliseconds -> bucket index, for the parser's hot loop (no search per line).
_BUCKET_OF_MS: list[int] = [0]  # 0 ms is in the first bucket, (0, 1 ms]
for _index, (_below, _bound) in enumerate(zip((0, *_BOUNDS_MS), _BOUNDS_MS, strict=False)):
    _BUCKET_OF_MS.extend([_index] * (_bound - _below))
_OVERFLOW = len(_BOUNDS_MS)  # the +Inf bucket

# Distinct endpoints kept for the breakdown; the rest are counted as "(other)".
MAX_ENDPOINTS = 200
OTHER_ENDPOINT = "(other)"
# Lines read before a log without one deployflow line is called misconfigured.
FOREIGN_LINES_BEFORE_ERROR = 20
# Figures kept: per second for ten minutes, per ten seconds for three hours.
FINE_SECONDS = 600
COARSE_STEP = 10
RETENTION_SECONDS = 3 * 3600
# Lines are in time order only roughly: a request is logged when it ends (nginx) or stamped
# when it began (HAProxy). A read back starts this much earlier than asked.
READ_BACK_SLACK = 60.0
# A log renamed away is still read until it has not grown for this long (its writer reopened).
ROTATED_GRACE = 120.0
_CHUNK = 1 << 20


class AccessLogMetricsSpec(StrictModel):
    """Metrics read from the router's access log: error rate, P95, the latency histogram and
    requests by endpoint and status, per version, for a service that exports no metrics."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("path", "slot_history")

    kind: Literal["access-log"] = Field(description="The router's access log.")
    path: Path = Field(
        description="The access log file: nginx's access_log with the deployflow log_format, or "
        "the file HAProxy's log reaches (through rsyslog, or HAProxy's stdout)."
    )
    format: Literal["nginx", "haproxy"] = Field(
        description="Which router writes it, in the deployflow format: nginx "
        f"\"log_format deployflow '{NGINX_LOG_FORMAT}';\", HAProxy "
        f'"log-format {HAPROXY_LOG_FORMAT}".'
    )
    slot_history: Path | None = Field(
        None,
        description="Where deployflow records which version it put at which router address "
        "(one line per traffic change); default <data dir>/slots/<service>.jsonl, the data dir "
        "being DEPLOYFLOW_DATA_DIR or ~/.deployflow. Give a shared path when deploys of the "
        "service run on more than one machine.",
    )


@dataclass
class _Figures:
    """Requests to one address in one slot of time."""

    requests: int = 0
    errors: int = 0
    latencies: dict[int, int] | None = None  # bucket index -> requests
    endpoints: dict[tuple[str, str], int] | None = None  # (endpoint, status) -> requests

    def merge(self, other: _Figures) -> None:
        self.requests += other.requests
        self.errors += other.errors
        if other.latencies:
            mine = self.latencies if self.latencies is not None else {}
            for k, v in other.latencies.items():
                mine[k] = mine.get(k, 0) + v
            self.latencies = mine
        if other.endpoints:
            ends = self.endpoints if self.endpoints is not None else {}
            for e, v in other.endpoints.items():
                ends[e] = ends.get(e, 0) + v
            self.endpoints = ends


def _endpoint(uri: str) -> str:
    path = uri.split("?", 1)[0]
    if path.startswith(("http://", "https://")):  # an absolute URI (a proxy request, HTTP/2)
        rest = path.split("://", 1)[1]
        path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return path or "/"


class AccessLogParser:
    """Turns lines in the deployflow format into per-second, per-address figures."""

    def __init__(self, router: Literal["nginx", "haproxy"]) -> None:
        self.router = router
        self.figures: dict[int, dict[str, _Figures]] = {}
        self.parsed = 0  # deployflow lines
        self.foreign = 0  # other lines (another format, HAProxy's own messages)
        self.malformed = 0  # deployflow lines that could not be read
        self._endpoints: dict[str, str] = {}

    def feed(self, lines: Iterable[str]) -> None:
        add = self._add
        nginx = self.router == "nginx"
        skip = len(MARK)
        for line in lines:
            start = line.find(MARK)
            if start < 0:
                if line.strip():
                    self.foreign += 1
                continue
            parts = line[start + skip :].rstrip("\r\n").split("|", 4)
            try:
                if len(parts) != 5:
                    raise ValueError(line)
                second = int(float(parts[0]))
                if nginx:
                    self._feed_nginx(second, parts[1], parts[2], parts[3], parts[4])
                else:
                    ms = int(parts[3])
                    add(second, parts[1], parts[2], ms if ms >= 0 else None, parts[4])
            except ValueError:
                self.malformed += 1
                continue
            self.parsed += 1

    def _feed_nginx(self, second: int, addrs: str, statuses: str, times: str, uri: str) -> None:
        if "," not in addrs and " : " not in addrs:
            self._add(second, addrs, statuses, _nginx_ms(times), uri)
            return
        # Several upstream attempts (a retry, an internal redirect): each is a request that
        # server answered, with its own status and time.
        split = _nginx_values
        for addr, status, took in zip(split(addrs), split(statuses), split(times), strict=False):
            self._add(second, addr, status, _nginx_ms(took), uri)

    def _add(self, second: int, address: str, status: str, ms: int | None, uri: str) -> None:
        if address[0] in "-<" or not status.isdigit():
            return  # no server answered (a client gone, HAProxy without a server)
        by_address = self.figures.get(second)
        if by_address is None:
            by_address = self.figures[second] = {}
        figures = by_address.get(address)
        if figures is None:
            figures = by_address[address] = _Figures(0, 0, {}, {})
        figures.requests += 1
        if status[0] == "5":
            figures.errors += 1
        if ms is not None:
            bucket = _BUCKET_OF_MS[ms] if ms <= _BOUNDS_MS[-1] else _OVERFLOW
            latencies = figures.latencies
            assert latencies is not None
            latencies[bucket] = latencies.get(bucket, 0) + 1
        endpoint = self._endpoints.get(uri)
        if endpoint is None:
            endpoint = _endpoint(uri)
            if len(self._endpoints) < MAX_ENDPOINTS * 8:
                self._endpoints[uri] = endpoint
        key = (endpoint, status)
        endpoints = figures.endpoints
        assert endpoints is not None
        if key not in endpoints and len(endpoints) >= MAX_ENDPOINTS:
            key = (OTHER_ENDPOINT, status)
        endpoints[key] = endpoints.get(key, 0) + 1

    def compact(self, now: float) -> None:
        """Merge seconds older than ``FINE_SECONDS`` into ``COARSE_STEP`` slots; drop what is
        older than ``RETENTION_SECONDS``."""
        fine_from = int(now) - FINE_SECONDS
        oldest = int(now) - RETENTION_SECONDS
        for second in [s for s in self.figures if s < fine_from and s % COARSE_STEP]:
            by_address = self.figures.pop(second)
            if second < oldest:
                continue
            into = self.figures.setdefault(second - second % COARSE_STEP, {})
            for address, figures in by_address.items():
                if address in into:
                    into[address].merge(figures)
                else:
                    into[address] = figures
        for second in [s for s in self.figures if s < oldest]:
            del self.figures[second]


def _nginx_values(field: str) -> list[str]:
    return field.replace(" : ", ", ").split(", ")


def _nginx_ms(seconds: str) -> int | None:
    if not seconds or seconds[0] == "-":
        return None
    return round(float(seconds) * 1000.0)


def line_time(line: str) -> float | None:
    """The time a deployflow line carries, None for any other line."""
    start = line.find(MARK)
    if start < 0:
        return None
    head = line[start + len(MARK) :].split("|", 1)[0]
    try:
        return float(head)
    except ValueError:
        return None


class _OpenLog:
    """One open file of the log and the bytes of it consumed so far."""

    def __init__(self, handle: int, inode: int, offset: int, clock: float) -> None:
        self.fd = handle
        self.inode = inode
        self.offset = offset  # next byte to parse
        self.grew_at = clock

    def close(self) -> None:
        os.close(self.fd)


class AccessLogReader:
    """Follows one log file across rotation and reads back into it by time.

    ``catch_up`` parses what was appended since; ``read_back(since)`` parses the part of the
    current file from ``since`` to where reading began. Both raise ``OSError`` when the log
    cannot be read (missing before it was ever opened, no permission).
    """

    def __init__(
        self, path: Path, parser: AccessLogParser, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = path
        self.parser = parser
        self._clock = clock
        self._current: _OpenLog | None = None
        self._rotated: list[_OpenLog] = []
        # The first byte of the current file that was parsed, and the time from which every
        # request is in the figures (what read_back can still extend).
        self._low = 0
        self.complete_since = math.inf
        self._can_read_back = True

    def close(self) -> None:
        for log in [*self._rotated, *([self._current] if self._current else [])]:
            log.close()
        self._rotated = []
        self._current = None

    def _open(self) -> _OpenLog:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            info = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        return _OpenLog(fd, info.st_ino, 0, self._clock())

    def catch_up(self) -> None:
        now = self._clock()
        if self._current is None:
            log = self._open()
            size = os.fstat(log.fd).st_size
            log.offset = _line_start_before(log.fd, size)
            self._current, self._low = log, log.offset
            self.complete_since = now
            return
        try:
            info: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            info = None  # renamed away, the new one not created yet: keep reading the old one
        current = self._current
        if info is not None and info.st_ino != current.inode:
            self._rotated.append(current)
            self._current = self._open()
            self._low = 0
            self._can_read_back = False  # what came before is in the rotated file
        elif info is not None and info.st_size < current.offset:
            current.offset = 0  # truncated in place (copytruncate): read it from its start
            self._low = 0
            self._can_read_back = False
        for log in self._rotated:
            self._drain(log, now)
        for log in [log for log in self._rotated if now - log.grew_at >= ROTATED_GRACE]:
            log.close()  # its writer moved to the new file long ago
            self._rotated.remove(log)
        self._drain(self._current, now)

    def _drain(self, log: _OpenLog, now: float) -> None:
        while True:
            data = os.pread(log.fd, _CHUNK, log.offset)
            end = data.rfind(b"\n")
            if end < 0:
                if len(data) >= _CHUNK:  # one line longer than a chunk: not ours, skip it
                    log.offset += len(data)
                    continue
                return
            self.parser.feed(data[: end + 1].decode("utf-8", "replace").split("\n"))
            log.offset += end + 1
            log.grew_at = now
            if len(data) < _CHUNK:
                return

    def read_back(self, since: float) -> None:
        if since >= self.complete_since or self._current is None:
            return
        if not self._can_read_back or self._low == 0:
            self.complete_since = -math.inf  # nothing older can be read
            return
        fd = self._current.fd
        start = _offset_at(fd, since - READ_BACK_SLACK, self._low)
        offset = start
        while offset < self._low:
            data = os.pread(fd, min(_CHUNK, self._low - offset), offset)
            if not data:
                break
            end = data.rfind(b"\n") if offset + len(data) < self._low else len(data) - 1
            if end < 0:
                offset += len(data)
                continue
            self.parser.feed(data[: end + 1].decode("utf-8", "replace").split("\n"))
            offset += end + 1
        self._low = start
        self.complete_since = since if start > 0 else -math.inf


def _line_start_before(fd: int, size: int) -> int:
    """The offset just after the last newline before ``size`` (0 if none)."""
    position = size
    while position > 0:
        begin = max(0, position - 65536)
        data = os.pread(fd, position - begin, begin)
        found = data.rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        position = begin
    return 0


def _first_time_after(fd: int, position: int, end: int) -> tuple[int, float] | None:
    """The start and time of the first deployflow line that starts at or after ``position``
    (within 64 KiB and before ``end``)."""
    data = os.pread(fd, min(65536, end - position), position)
    skip = 0
    if position > 0:
        newline = data.find(b"\n")
        if newline < 0:
            return None
        skip = newline + 1
    while skip < len(data):
        newline = data.find(b"\n", skip)
        if newline < 0:
            return None
        found = line_time(data[skip:newline].decode("utf-8", "replace"))
        if found is not None:
            return position + skip, found
        skip = newline + 1
    return None


def _offset_at(fd: int, since: float, end: int) -> int:
    """A line start before ``end`` from which every line is at or after ``since`` (give or take
    64 KiB): a binary search on the lines' times."""
    low, high = 0, end
    while high - low > 65536:
        middle = (low + high) // 2
        found = _first_time_after(fd, middle, end)
        if found is None or found[1] >= since:
            high = middle
        else:
            low = found[0]
    return low


class AccessLogMetrics:
    """The ``Metrics`` (and ``MetricsOverTime``) backend reading a router's access log.

    Args:
        path: The access log.
        router: Which router writes it (``nginx`` or ``haproxy``), in the deployflow format.
        history: Which version deployflow put at which address, over time.
        clock: Unix time now (tests pass their own).
    """

    def __init__(
        self,
        path: Path,
        router: Literal["nginx", "haproxy"],
        history: SlotHistory,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.router = router
        self.slot_history = history
        self._clock = clock
        self.parser = AccessLogParser(router)
        self.reader = AccessLogReader(self.path, self.parser, clock)
        self._lock = threading.Lock()

    @classmethod
    def from_spec(cls, spec: AccessLogMetricsSpec, ctx: BuildContext) -> AccessLogMetrics:
        """The metrics backend a spec's ``metrics`` section of kind ``access-log`` describes."""
        path = spec.slot_history
        if path is None:
            from deployflow.tracking.db import data_dir  # only a run needs it

            path = default_history_path(data_dir(), ctx.service or "service")
        return cls(spec.path, spec.format, SlotHistory(path))

    def describe(self) -> str:
        return f"{self.router} access log {self.path}"

    def close(self) -> None:
        with self._lock:
            self.reader.close()

    # -- reading ---------------------------------------------------------------------------------

    def _read(self, since: float) -> str | None:
        """Bring the figures up to now and back to ``since``; why not, when they cannot be."""
        try:
            self.reader.catch_up()
            self.reader.read_back(since)
        except OSError as exc:
            return f"access log {self.path} cannot be read: {exc.strerror or exc}"
        self.parser.compact(self._clock())
        if self.parser.parsed == 0 and self.parser.foreign >= FOREIGN_LINES_BEFORE_ERROR:
            return (
                f"access log {self.path}: {self.parser.foreign} lines read, none in the "
                f"deployflow {self.router} format (see the log format in "
                "docs/configuration/access-log.md)"
            )
        return None

    def _version_figures(
        self, version: str, start: float, end: float, index: SlotIndex
    ) -> dict[int, _Figures]:
        """Per time slot, the figures of the addresses that were ``version``'s then."""
        found: dict[int, _Figures] = {}
        first = math.floor(start)
        coarse_before = int(self._clock()) - FINE_SECONDS
        for second, by_address in self.parser.figures.items():
            width = COARSE_STEP if second < coarse_before else 1
            if second + width <= first or second > end:
                continue
            for address, figures in by_address.items():
                # The version at the address by the end of the slot of time: an address that
                # took its version within the slot (a new canary) has served nothing else in it.
                if index.version_of(address, second + width - 0.001) != version:
                    continue
                total = found.get(second)
                if total is None:
                    found[second] = total = _Figures(0, 0, {}, {})
                total.merge(figures)
        return found

    def _window(self, version: str, window_seconds: float) -> MetricSample:
        validate_version(version)
        now = self._clock()
        start = now - window_seconds
        with self._lock:
            problem = self._read(start)
            if problem is not None:
                return MetricSample(None, None, None, error=problem)
            per_second = self._version_figures(version, start, now, self.slot_history.index())
        total = _Figures(0, 0, {}, {})
        for figures in per_second.values():
            total.merge(figures)
        return _sample(total)

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        """Error rate (5xx), P95, requests and the latency histogram of ``version`` over the
        trailing window, from the requests the router logged."""
        return self._window(version, window_seconds)

    def p95(self, version: str, window_seconds: float) -> Reading:
        """P95 latency of ``version`` in seconds over the trailing window."""
        sample = self._window(version, window_seconds)
        return Reading(sample.p95_seconds, error=sample.error)

    def history(
        self,
        version: str,
        start: datetime,
        end: datetime,
        step_seconds: float,
        window_seconds: float,
    ) -> MetricHistory:
        """Error rate and P95 of ``version`` every ``step_seconds`` from ``start`` to ``end``,
        each over the ``window_seconds`` before its point; points without requests left out."""
        validate_version(version)
        first, last = start.timestamp(), end.timestamp()
        step = max(step_seconds, 1.0)
        with self._lock:
            problem = self._read(first - window_seconds)
            if problem is not None:
                return MetricHistory(error=problem)
            per_second = self._version_figures(
                version, first - window_seconds, last, self.slot_history.index()
            )
        errors: list[tuple[float, float]] = []
        p95s: list[tuple[float, float]] = []
        seconds = sorted(per_second)
        point = first
        while point <= last + 1e-9:
            # The seconds in (point - window, point], as Prometheus' range selector.
            lo = bisect.bisect_right(seconds, point - window_seconds)
            hi = bisect.bisect_right(seconds, point)
            total = _Figures(0, 0, {}, {})
            for second in seconds[lo:hi]:
                total.merge(per_second[second])
            sample = _sample(total)
            if sample.error_rate is not None:
                errors.append((point, sample.error_rate))
            if sample.p95_seconds is not None:
                p95s.append((point, sample.p95_seconds))
            point += step
        return MetricHistory(error_rate=tuple(errors), p95_seconds=tuple(p95s))

    def breakdown(self, version: str, start: datetime, end: datetime) -> RequestBreakdown:
        """Requests of ``version`` between ``start`` and ``end`` by endpoint and status code."""
        validate_version(version)
        first, last = start.timestamp(), end.timestamp()
        with self._lock:
            problem = self._read(first)
            if problem is not None:
                return RequestBreakdown(error=problem)
            per_second = self._version_figures(version, first, last, self.slot_history.index())
        total = _Figures(0, 0, {}, {})
        for figures in per_second.values():
            total.merge(figures)
        rows = [(e, s, float(n)) for (e, s), n in (total.endpoints or {}).items() if n > 0]
        return RequestBreakdown(rows=tuple(sorted(rows, key=lambda r: (-r[2], r[0], r[1]))))


def _sample(figures: _Figures) -> MetricSample:
    """The figures as the analysis reads them; no requests is no data."""
    if figures.requests == 0:
        return MetricSample(None, None, None)
    buckets = cumulative_buckets(figures.latencies or {})
    p95 = Histogram.from_cumulative(list(buckets)).quantile(0.95) if buckets else None
    return MetricSample(
        error_rate=figures.errors / figures.requests,
        p95_seconds=p95,
        requests=float(figures.requests),
        buckets=buckets,
    )


def cumulative_buckets(latencies: dict[int, int]) -> tuple[tuple[float, float], ...]:
    """(upper bound in seconds, cumulative count) pairs from bucket counts: the fixed grid from
    its first bound to the one holding the slowest request, then +Inf. Every version's
    histogram starts on the same grid, so two of them share every bound up to the faster one's
    slowest request, and the rank test compares them bucket by bucket."""
    if not latencies:
        return ()
    highest = min(max(latencies), _OVERFLOW - 1)
    pairs: list[tuple[float, float]] = []
    running = 0
    for index in range(highest + 1):
        running += latencies.get(index, 0)
        pairs.append((LATENCY_BOUNDS[index], float(running)))
    pairs.append((math.inf, float(sum(latencies.values()))))
    return tuple(pairs)
