"""Per-version figures from a router's access log: parsing, following the file, attribution."""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployflow.analysis import Outcome, Thresholds, evaluate
from deployflow.providers.access_log import (
    LATENCY_BOUNDS,
    AccessLogMetrics,
    AccessLogParser,
    cumulative_buckets,
)
from deployflow.providers.base import Instance
from deployflow.providers.slots import SlotAssignment, SlotEntry, SlotHistory
from deployflow.spec import AnalysisSpec, load_spec, parse_spec
from deployflow.stats import Histogram
from tests.samples import problems, spec_data

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
V1 = Instance("v1", "127.0.0.1", 9001)
V2 = Instance("v2", "127.0.0.1", 9002)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def nginx(at: float, address: str, status: int | str, seconds: str, uri: str = "/api/items") -> str:
    return f"deployflow|{at:.3f}|{address}|{status}|{seconds}|{uri}\n"


def haproxy(at: float, address: str, status: int, ms: int, uri: str = "/api/items") -> str:
    # What rsyslog writes before HAProxy's message is skipped.
    return f"Dec  6 08:00:00 lb haproxy[41]: deployflow|{at:.3f}|{address}|{status}|{ms}|{uri}\n"


def history(*entries: tuple[float, tuple[tuple[str, Instance], ...]]) -> SlotHistory:
    found = SlotHistory(None)
    for at, slots in entries:
        found.record(
            SlotEntry(at, tuple(SlotAssignment(s, i.address, i.version) for s, i in slots))
        )
    return found


def split_since(at: float) -> SlotHistory:
    return history((at, (("stable", V1), ("canary", V2))))


def append(path: Path, *lines: str) -> None:
    with path.open("a") as handle:
        handle.write("".join(lines))


# -- parsing -------------------------------------------------------------------------------------


def test_an_nginx_line_is_one_request_to_the_address_that_answered() -> None:
    parser = AccessLogParser("nginx")
    parser.feed([nginx(NOW, V2.address, 503, "0.042", "/api/checkout?id=7").rstrip("\n")])
    (figures,) = parser.figures[int(NOW)].values()
    assert (figures.requests, figures.errors) == (1, 1)
    assert figures.endpoints == {("/api/checkout", "503"): 1}
    (bucket,) = figures.latencies or {}
    assert LATENCY_BOUNDS[bucket] == pytest.approx(0.042, rel=0.05)


def test_nginx_retries_count_each_attempt_against_its_own_server() -> None:
    # The canary refused (502), nginx retried on the stable server, which answered 200.
    line = f"deployflow|{NOW}|{V2.address}, {V1.address}|502, 200|0.001, 0.020|/api/items"
    parser = AccessLogParser("nginx")
    parser.feed([line])
    by_address = parser.figures[int(NOW)]
    assert (by_address[V2.address].requests, by_address[V2.address].errors) == (1, 1)
    assert (by_address[V1.address].requests, by_address[V1.address].errors) == (1, 0)


def test_requests_no_server_answered_and_other_lines_are_not_counted() -> None:
    parser = AccessLogParser("haproxy")
    parser.feed(
        [
            haproxy(NOW, "-:-", 503, -1),  # HAProxy had no server
            f"deployflow|{NOW}|{V1.address}|-1|-1|/x",  # the client left before an answer
            "[WARNING] (41) : Server app/canary is DOWN",  # HAProxy's own message
            "deployflow|not-a-time|x|200|1|/",  # a broken line
            haproxy(NOW, V1.address, 200, 12),
        ]
    )
    assert sum(f.requests for f in parser.figures[int(NOW)].values() if f.requests) == 1
    assert (parser.parsed, parser.foreign, parser.malformed) == (3, 1, 1)


def test_an_absolute_uri_and_a_query_string_are_reduced_to_the_path() -> None:
    parser = AccessLogParser("haproxy")
    parser.feed([haproxy(NOW, V1.address, 200, 5, "http://shop.test/api/items?page=2")])
    (figures,) = parser.figures[int(NOW)].values()
    assert figures.endpoints == {("/api/items", "200"): 1}


def test_the_histogram_is_exact_in_milliseconds_where_latencies_usually_are() -> None:
    latencies = {LATENCY_BOUNDS.index(0.003): 10, LATENCY_BOUNDS.index(0.01): 5}
    buckets = cumulative_buckets(latencies)
    assert buckets[:4] == ((0.001, 0.0), (0.002, 0.0), (0.003, 10.0), (0.004, 10.0))
    assert buckets[-1] == (math.inf, 15.0)
    assert Histogram.from_cumulative(list(buckets)).total == 15


# -- following the file --------------------------------------------------------------------------


def test_a_missing_log_is_an_error_never_data(tmp_path: Path) -> None:
    metrics = AccessLogMetrics(tmp_path / "absent.log", "nginx", split_since(0), Clock())
    sample = metrics.sample("v1", 60)
    assert sample.error
    assert "absent.log" in sample.error
    assert (sample.requests, sample.error_rate) == (None, None)
    assert evaluate(sample, 0.05, Thresholds()).outcome is Outcome.ERROR


def test_an_unreadable_log_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(nginx(NOW - 5, V1.address, 200, "0.010"))
    log.chmod(0)
    if os.access(log, os.R_OK):
        pytest.skip("running as root: every file is readable")
    assert AccessLogMetrics(log, "nginx", split_since(0), Clock()).sample("v1", 60).error


def test_a_log_in_another_format_is_an_error_naming_the_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    combined = '127.0.0.1 - - [06/Dec/2026:08:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "curl"\n'
    log.write_text(combined * 30)
    sample = AccessLogMetrics(log, "nginx", split_since(0), Clock()).sample("v1", 60)
    assert sample.error
    assert "none in the deployflow nginx format" in sample.error


def test_an_empty_log_is_no_data(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    sample = AccessLogMetrics(log, "nginx", split_since(0), Clock()).sample("v1", 60)
    assert (sample.error, sample.requests, sample.buckets) == (None, None, ())


def test_the_first_look_reads_back_the_window_and_later_looks_only_what_was_appended(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    # An hour of v1 at 10 requests/s (a 2.6 MB file); the window is the last minute.
    append(log, *(nginx(NOW - 3600 + i / 10, V1.address, 200, "0.010") for i in range(36000)))
    clock = Clock()
    metrics = AccessLogMetrics(log, "nginx", split_since(0), clock)
    assert metrics.sample("v1", 60).requests == pytest.approx(600, abs=10)
    # Only the window (and the read-back slack) was parsed, not the hour.
    assert metrics.parser.parsed < 36000 / 10
    clock.now += 10
    append(log, *(nginx(NOW + i / 10, V1.address, 500, "0.010") for i in range(100)))
    sample = metrics.sample("v1", 60)
    assert sample.requests == pytest.approx(600, abs=10)
    assert sample.error_rate == pytest.approx(100 / 600, abs=0.02)
    # A longer window later reads further back.
    assert metrics.sample("v1", 1200).requests == pytest.approx(12000, abs=20)


def test_a_line_being_written_is_read_once_it_is_whole(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    metrics = AccessLogMetrics(log, "nginx", split_since(0), Clock())
    assert metrics.sample("v1", 60).requests is None
    line = nginx(NOW - 1, V1.address, 200, "0.010")
    append(log, line[:20])
    assert metrics.sample("v1", 60).requests is None
    append(log, line[20:])
    assert metrics.sample("v1", 60).requests == 1


def test_rotation_by_rename_reads_the_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    clock = Clock()
    metrics = AccessLogMetrics(log, "nginx", split_since(0), clock)
    metrics.sample("v1", 60)
    append(log, nginx(NOW - 3, V1.address, 200, "0.010"))
    os.rename(log, tmp_path / "access.log.1")  # logrotate renames...
    # ...and the router writes to the renamed file until it reopens (nginx -s reopen)
    append(tmp_path / "access.log.1", nginx(NOW - 2, V1.address, 200, "0.010"))
    assert metrics.sample("v1", 60).requests == 2  # no new file yet: still the old one
    append(tmp_path / "access.log.1", nginx(NOW - 1, V1.address, 200, "0.010"))
    log.write_text(nginx(NOW - 1, V1.address, 500, "0.010"))  # reopened: the new file
    append(tmp_path / "access.log.1", nginx(NOW - 1, V1.address, 200, "0.010"))  # in flight
    sample = metrics.sample("v1", 60)
    assert (sample.requests, sample.error_rate) == (5, pytest.approx(1 / 5))
    append(log, nginx(NOW, V1.address, 200, "0.010"))
    assert metrics.sample("v1", 60).requests == 6


def test_a_log_truncated_in_place_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    metrics = AccessLogMetrics(log, "nginx", split_since(0), Clock())
    append(log, *(nginx(NOW - 2, V1.address, 200, "0.010") for _ in range(5)))
    assert metrics.sample("v1", 60).requests == 5
    log.write_text(nginx(NOW - 1, V1.address, 200, "0.010"))  # copytruncate, then one line
    assert metrics.sample("v1", 60).requests == 6


# -- attribution ---------------------------------------------------------------------------------


def test_each_version_gets_the_requests_of_the_address_it_sat_at(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = []
    for i in range(400):
        at = NOW - 40 + i / 10
        if i % 4 == 0:  # the canary: one request in four, 20% of them failing
            lines.append(nginx(at, V2.address, 500 if i % 20 == 0 else 200, "0.030"))
        else:
            lines.append(nginx(at, V1.address, 200, "0.010"))
    log.write_text("")
    metrics = AccessLogMetrics(log, "nginx", split_since(NOW - 100), Clock())
    metrics.sample("v1", 60)
    append(log, *lines)
    canary, stable = metrics.sample("v2", 60), metrics.sample("v1", 60)
    assert (canary.requests, canary.error_rate) == (100, pytest.approx(0.2))
    assert (stable.requests, stable.error_rate) == (300, 0.0)
    assert canary.p95_seconds == pytest.approx(0.030, rel=0.05)
    assert stable.p95_seconds == pytest.approx(0.010, rel=0.1)
    # The judge reads them as it reads Prometheus' figures: the canary is harmful.
    measured = evaluate(canary, 0.010, Thresholds(), control=stable)
    assert measured.outcome is Outcome.FAILED
    assert {b.metric for b in measured.breaches} >= {"error_rate", "p95_latency"}
    assert metrics.sample("v9", 60) == metrics.sample("no-such-version", 60)
    assert metrics.sample("v9", 60).requests is None


def test_a_window_spanning_a_promotion_gives_each_request_to_the_version_that_served_it(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    promoted_at = NOW - 30
    slots = history(
        (NOW - 100, (("stable", V1), ("canary", V2))),
        (promoted_at, (("stable", V2),)),
    )
    log.write_text("")
    metrics = AccessLogMetrics(log, "nginx", slots, Clock())
    metrics.sample("v1", 60)
    before = [nginx(NOW - 50 + i / 10, V1.address, 200, "0.010") for i in range(200)]
    after = [nginx(promoted_at + i / 10, V2.address, 200, "0.010") for i in range(300)]
    late = [nginx(promoted_at + 0.5, V1.address, 200, "0.900")]  # v1's, in flight at the switch
    append(log, *before, *late, *after)
    assert metrics.sample("v1", 60).requests == 201
    assert metrics.sample("v2", 60).requests == 300


def test_history_and_breakdown_over_a_range(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    metrics = AccessLogMetrics(log, "haproxy", split_since(NOW - 1000), Clock())
    metrics.sample("v2", 1)
    lines = [haproxy(NOW - 120 + i, V2.address, 200, 20, "/api/items") for i in range(120)]
    lines += [haproxy(NOW - 59 + i, V2.address, 500, 40, "/api/checkout") for i in range(0, 60, 4)]
    append(log, *lines)
    start, end = datetime.fromtimestamp(NOW - 120, UTC), datetime.fromtimestamp(NOW, UTC)
    over = metrics.history("v2", start, end, 30, 30)
    assert over.error is None
    # Each point over the 30 s before it: 8 of 38 requests failed, then 7 of 36.
    assert [v for _, v in over.error_rate] == pytest.approx([0, 0, 0, 8 / 38, 7 / 36])
    assert all(p > 0.019 for _, p in over.p95_seconds)
    rows = metrics.breakdown("v2", start, end).rows
    assert rows == (("/api/items", "200", 120.0), ("/api/checkout", "500", 15.0))
    assert metrics.history("v1", start, end, 30, 30).error_rate == ()


def test_memory_stays_flat_older_seconds_merge_and_the_oldest_go(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text("")
    clock = Clock()
    metrics = AccessLogMetrics(log, "nginx", split_since(0), clock)
    metrics.sample("v1", 1)
    append(log, *(nginx(NOW - 1 + i, V1.address, 200, "0.010") for i in range(2000)))
    clock.now = NOW + 2000
    assert metrics.sample("v1", 4 * 3600).requests == 2000  # nothing lost by merging
    assert len(metrics.parser.figures) < 600 + 1400 / 10 + 5
    clock.now = NOW + 4 * 3600
    metrics.sample("v1", 60)
    assert metrics.parser.figures == {}


# -- the spec ------------------------------------------------------------------------------------


def test_the_spec_section_and_its_mistakes() -> None:
    section = {"kind": "access-log", "path": "/var/log/nginx/shop.log", "format": "nginx"}
    spec = parse_spec(spec_data(metrics=section))
    assert spec.metrics.kind == "access-log"
    found = problems(spec_data(metrics={**section, "format": "apache"}), env={})
    assert "metrics.format" in found
    assert "'nginx'" in found["metrics.format"]
    assert "'haproxy'" in found["metrics.format"]
    assert "metrics.path" in problems(spec_data(metrics={"kind": "access-log", "format": "nginx"}))
    assert "metrics.queries" in problems(spec_data(metrics={**section, "queries": {}}))


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_the_worked_examples_validate_with_their_defaults(router: str) -> None:
    examples = Path(__file__).parents[2] / "examples"
    spec = load_spec(examples / f"plain-{router}.yaml", env={})
    assert (spec.router.kind, spec.metrics.kind, spec.metrics.format) == (
        router,
        "access-log",
        router,
    )
    # The judge at its defaults: only the looks are set (every 10 s, over the last minute).
    assert spec.analysis == AnalysisSpec(interval="10s", window="1m", max_stage_duration="30m")


def test_a_new_canary_s_first_second_is_its_own(tmp_path: Path) -> None:
    # The canary took its slot at .6 of a second; its requests in the rest of that second count.
    log = tmp_path / "access.log"
    log.write_text("")
    slots = history((NOW - 100, (("stable", V1),)), (NOW - 9.4, (("stable", V1), ("canary", V2))))
    metrics = AccessLogMetrics(log, "nginx", slots, Clock())
    metrics.sample("v2", 60)
    append(log, *(nginx(NOW - 9.3 + i / 100, V2.address, 200, "0.010") for i in range(30)))
    assert metrics.sample("v2", 60).requests == 30
