"""Logs, alerts and dependencies as signals: the pure judging, the log sources on files and
commands, the spec sections, and the stage loop with a signal folded in."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Thresholds, Verdict
from deployflow.fakes.backends import FakeAlerts, InMemoryTarget
from deployflow.providers.alertmanager import parse_matcher
from deployflow.providers.base import AlertsRead, DependencyStatus, FiringAlert, LogRead
from deployflow.providers.dependencies import judge_values
from deployflow.providers.logs import (
    CommandLogSource,
    FileLogSource,
    TargetLogSource,
    new_lines,
)
from deployflow.rollout import observe_stage
from deployflow.signals import (
    AlertWatch,
    LogWatch,
    SignalReading,
    judge_alerts,
    judge_log_errors,
    preflight,
    with_signals,
)
from deployflow.spec import LogsSpec, SpecError, parse_spec
from tests.contracts import LogSourceContract
from tests.samples import spec_data

pytestmark = pytest.mark.unit


def logs_spec(**changes: object) -> LogsSpec:
    data: dict = {"source": {"kind": "file", "paths": ["/x/{version}.log"]},
                  "patterns": ["ERROR"], "max_per_minute": 5}  # fmt: skip
    data.update(changes)
    return LogsSpec.model_validate(data)


# -- judging -------------------------------------------------------------------------------------


def test_a_few_lines_at_the_first_look_are_within_one_minutes_budget() -> None:
    outcome, note, breach = judge_log_errors(
        5, 2.0, None, max_per_minute=5, max_per_1k_requests=None
    )
    assert (outcome, breach) == (Outcome.SUCCESSFUL, None)
    assert "5 log line(s)" in note


def test_more_lines_than_the_budget_fail_at_once_with_the_rate() -> None:
    outcome, note, breach = judge_log_errors(
        12, 30.0, None, max_per_minute=5, max_per_1k_requests=None
    )
    assert outcome is Outcome.FAILED
    assert breach is not None
    assert breach.metric == "log_errors"
    assert breach.value == pytest.approx(24.0)
    assert breach.threshold == 5
    assert "24 per minute" in note


def test_the_per_minute_budget_grows_with_the_stage() -> None:
    assert judge_log_errors(9, 120.0, None, max_per_minute=5, max_per_1k_requests=None)[0] is (
        Outcome.SUCCESSFUL
    )
    assert judge_log_errors(11, 120.0, None, max_per_minute=5, max_per_1k_requests=None)[0] is (
        Outcome.FAILED
    )


def test_per_1000_requests_when_the_request_count_is_known() -> None:
    outcome, note, breach = judge_log_errors(
        30, 600.0, 4000.0, max_per_minute=100, max_per_1k_requests=5
    )
    assert outcome is Outcome.FAILED  # 7.5 per 1,000 requests, although 3 per minute
    assert "per 1,000 requests" in note
    assert breach is not None
    assert breach.value == pytest.approx(7.5)
    # Unknown request count: the per-minute threshold judges instead.
    assert judge_log_errors(30, 600.0, None, max_per_minute=100, max_per_1k_requests=5)[0] is (
        Outcome.SUCCESSFUL
    )
    # Only per 1,000 requests and no count: cannot be judged, never a promotion.
    assert judge_log_errors(3, 60.0, None, max_per_minute=None, max_per_1k_requests=5)[0] is (
        Outcome.INCONCLUSIVE
    )


def test_alerts_firing_fail_and_an_alertmanager_that_cannot_be_asked_is_an_error() -> None:
    failed = judge_alerts(["HighErrors"], ["HighErrors{service=shop}"], None)
    assert failed.outcome is Outcome.FAILED
    assert failed.breach is not None
    assert "HighErrors" in failed.breach.reason
    assert failed.evidence == ("alert: HighErrors{service=shop}",)
    assert judge_alerts([], [], "connection refused").outcome is Outcome.ERROR
    assert judge_alerts([], [], None).outcome is Outcome.SUCCESSFUL


def _measurement(outcome: Outcome) -> Measurement:
    breaches = (Breach("error_rate", 0.3, 0.05, "errors"),) if outcome is Outcome.FAILED else ()
    return Measurement(outcome, MetricSample(0.0, 0.02, 100), 0.02, breaches, note="metrics")


@pytest.mark.parametrize(
    ("metrics", "signal", "expected"),
    [
        (Outcome.SUCCESSFUL, Outcome.FAILED, Outcome.FAILED),
        (Outcome.SUCCESSFUL, Outcome.ERROR, Outcome.ERROR),
        (Outcome.FAILED, Outcome.ERROR, Outcome.FAILED),
        (Outcome.INCONCLUSIVE, Outcome.SUCCESSFUL, Outcome.INCONCLUSIVE),
        (Outcome.ERROR, Outcome.INCONCLUSIVE, Outcome.ERROR),
        (Outcome.SUCCESSFUL, Outcome.SUCCESSFUL, Outcome.SUCCESSFUL),
    ],
)
def test_the_worst_outcome_wins(metrics: Outcome, signal: Outcome, expected: Outcome) -> None:
    breach = Breach("log_errors", 9.0, 5.0, "logs") if signal is Outcome.FAILED else None
    reading = SignalReading("logs", signal, "logs note", breach, ("log: ERROR x",))
    combined = with_signals(_measurement(metrics), [reading])
    assert combined.outcome is expected
    assert combined.note == "metrics; logs note"
    assert combined.evidence == ("log: ERROR x",)
    assert combined.to_dict()["evidence"] == ["log: ERROR x"]
    if metrics is Outcome.FAILED:
        assert combined.breaches[0].metric == "error_rate"  # the metrics' reason comes first


def test_new_lines_skips_what_the_previous_tail_ended_with() -> None:
    assert new_lines(("a", "b", "c"), ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(("a", "a"), ["a", "a", "a"]) == ["a"]
    assert new_lines((), ["x"]) == ["x"]
    assert new_lines(("x",), ["y", "z"]) == ["y", "z"]  # rotated: nothing in common
    assert new_lines(("a", "b"), ["a", "b"]) == []


def test_dependency_values_must_lie_within_the_bounds() -> None:
    assert judge_values([1.0, 1.0], 1.0, None) is None
    assert judge_values([1.0, 0.0], 1.0, None) == "value 0 below 1"
    assert judge_values([0.2], None, 0.05) == "value 0.2 above 0.05"
    assert judge_values([], 1.0, None) == "the query returned no data"


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("service=shop", 'service="shop"'),
        ('severity =~ "page|critical"', 'severity=~"page|critical"'),
        ('team!="payments"', 'team!="payments"'),
    ],
)
def test_matchers_are_normalised(text: str, normal: str) -> None:
    assert parse_matcher(text) == normal


# -- spec ------------------------------------------------------------------------------------------


def problems(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as error:
        parse_spec(data)
    return error.value.problems


def test_a_bad_pattern_a_missing_threshold_and_a_bad_matcher_are_named() -> None:
    found = problems(
        spec_data(
            logs={
                "source": {"kind": "file", "paths": ["/l/{version}.log"]},
                "patterns": ["ERROR", "(unclosed"],
            },
            alerts={"kind": "alertmanager", "url": "http://am.test", "matchers": ["not a matcher"]},
            dependencies=[{"kind": "prometheus", "name": "db", "url": "http://p", "query": "up"}],
        )
    )
    paths = dict(found)
    assert "pattern 1 '(unclosed' is not a valid regular expression" in paths["logs.patterns"]
    assert "is not a label matcher" in paths["alerts.matchers"]
    assert "give min and/or max" in paths["dependencies.0"]


def test_unknown_kinds_of_the_new_sections_name_the_known_ones() -> None:
    found = problems(
        spec_data(
            logs={"source": {"kind": "loki"}, "patterns": ["E"], "max_per_minute": 1},
            alerts={"kind": "opsgenie"},
        )
    )
    assert ("logs.source.kind", "unknown logs kind 'loki'; known kinds: 'file', 'command', "
            "'target'") in found  # fmt: skip
    assert ("alerts.kind", "unknown alerts kind 'opsgenie'; known kinds: 'alertmanager'") in found


def test_the_sections_parse_and_dependency_names_are_unique() -> None:
    spec = parse_spec(
        spec_data(
            logs={
                "source": {"kind": "command", "argv": ["journalctl", "-u", "shop"]},
                "patterns": ["ERROR"],
                "max_per_1k_requests": 2,
            },
            alerts={"kind": "alertmanager", "url": "http://am.test/", "matchers": ["service=shop"]},
            dependencies=[{"kind": "http", "name": "db", "url": "http://db/healthz"}],
        )
    )
    assert spec.alerts is not None
    assert spec.alerts.matchers == ['service="shop"']
    twice = [{"kind": "http", "name": "db", "url": "http://a"},
             {"kind": "http", "name": "db", "url": "http://b"}]  # fmt: skip
    assert "db given twice" in dict(problems(spec_data(dependencies=twice)))["dependencies"]


# -- sources ---------------------------------------------------------------------------------------


class TestFileLogSource(LogSourceContract):
    @pytest.fixture
    def log_source(self, tmp_path: Path) -> FileLogSource:
        return FileLogSource([str(tmp_path / "{version}" / "*.log")])

    @pytest.fixture
    def write_log(self, tmp_path: Path):
        def write(version: str, line: str) -> None:
            (tmp_path / version).mkdir(exist_ok=True)
            with (tmp_path / version / "app.log").open("a") as handle:
                handle.write(line + "\n")

        return write

    @pytest.fixture
    def unreadable_log_source(self, tmp_path: Path) -> FileLogSource:
        return FileLogSource([str(tmp_path / "nowhere" / "{version}.log")])


class TestCommandLogSource(LogSourceContract):
    @pytest.fixture
    def log_source(self, tmp_path: Path) -> CommandLogSource:
        return CommandLogSource(["cat", str(tmp_path / "{version}.log")], timeout=5)

    @pytest.fixture
    def write_log(self, tmp_path: Path):
        def write(version: str, line: str) -> None:
            with (tmp_path / f"{version}.log").open("a") as handle:
                handle.write(line + "\n")

        return write

    @pytest.fixture
    def unreadable_log_source(self, tmp_path: Path) -> CommandLogSource:
        return CommandLogSource(["cat", str(tmp_path / "missing-{version}.log")], timeout=5)


class TestTargetLogSource(LogSourceContract):
    @pytest.fixture
    def target(self) -> InMemoryTarget:
        return InMemoryTarget()

    @pytest.fixture
    def log_source(self, target: InMemoryTarget) -> TargetLogSource:
        return TargetLogSource(target, lines=100)

    @pytest.fixture
    def write_log(self, target: InMemoryTarget):
        return lambda version, line: target.log_lines.setdefault(version, []).append(line)

    @pytest.fixture
    def unreadable_log_source(self):
        pytest.skip("Target.logs never fails: the target kind cannot tell no access from no logs")


def test_a_file_read_takes_whole_lines_and_restarts_a_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "v2.log"
    log.write_text("old line\n")
    source = FileLogSource([str(tmp_path / "{version}.log")])
    cursor = source.read("v2", None).cursor
    log.write_text("old line\nERROR new\npartial")
    read = source.read("v2", cursor)
    assert read.lines == ("ERROR new",)
    log.write_text("rotated\n")  # shorter than what was read: a new file
    assert source.read("v2", read.cursor).lines == ("rotated",)


def test_a_failing_command_is_an_error_naming_it(tmp_path: Path) -> None:
    source = CommandLogSource(["sh", "-c", "echo no access >&2; exit 3"], timeout=5)
    read = source.read("v2", source.read("v2", None).cursor)
    assert read.error == "sh exited 3: no access"


def test_the_command_gets_the_version_and_since(tmp_path: Path) -> None:
    out = tmp_path / "args"
    source = CommandLogSource(["sh", "-c", f'echo "$0 $1" > {out}', "{version}", "{since}"])
    source.read("v7", source.read("v7", None).cursor)
    version, since = out.read_text().split()
    assert version == "v7"
    assert since.isdigit()


# -- watches, stage loop, pre-flight ---------------------------------------------------------------


class ListSource:
    """A log source over a list the test appends to; ``broken`` makes it fail."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.broken = False

    def read(self, version: str, cursor: object | None) -> LogRead:
        if self.broken:
            return LogRead(cursor=cursor, error="permission denied")
        start = len(self.lines) if cursor is None else int(cursor)  # type: ignore[call-overload]
        return LogRead(tuple(self.lines[start:]), len(self.lines))

    def describe(self) -> str:
        return "list"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Healthy:
    def sample(self, version: str, window_seconds: float) -> MetricSample:
        return MetricSample(error_rate=0.0, p95_seconds=0.02, requests=1000)

    def p95(self, version: str, window_seconds: float):  # pragma: no cover - not asked
        raise AssertionError


def run_stage(probe, clock: FakeClock, on_measurement=None):
    return observe_stage(
        Healthy(),  # type: ignore[arg-type]
        version="v2", index=0, weight=50, baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=10),
        observe_seconds=10.0, interval_seconds=2.0, window_seconds=60.0,
        clock=clock, sleep=clock.sleep, signals=[probe], on_measurement=on_measurement,
    )  # fmt: skip


def test_each_pattern_may_carry_its_own_flags() -> None:
    watch = LogWatch(ListSource(), logs_spec(patterns=["(?i)traceback", "^FATAL"]))
    assert watch.matches("Traceback (most recent call last):")
    assert watch.matches("FATAL: out of memory")
    assert not watch.matches("all good, no FATAL here")


def test_error_lines_roll_back_a_stage_whose_metrics_are_healthy() -> None:
    source = ListSource()
    source.lines.append("ERROR before the stage: not counted")
    watch = LogWatch(source, logs_spec(max_per_minute=5))
    probe = watch.probe("v2")
    clock = FakeClock()

    def write(m: Measurement) -> None:
        source.lines.extend(["GET / 200", "ERROR order sync failed"] * 3)

    result = run_stage(probe, clock, on_measurement=write)
    assert result.verdict is Verdict.ROLLBACK
    assert result.reason is not None
    assert result.reason.metric == "log_errors"
    assert "6 log line(s)" in result.reason.reason  # the look after two writes: 6 > 5
    assert result.measurements[-1].evidence[-1] == "log: ERROR order sync failed"
    assert all("before the stage" not in e for e in result.measurements[-1].evidence)


def test_unreadable_logs_never_promote_and_roll_back_past_the_error_limit() -> None:
    source = ListSource()
    probe = LogWatch(source, logs_spec()).probe("v2")
    source.broken = True
    result = run_stage(probe, FakeClock())
    assert result.verdict is Verdict.ROLLBACK
    assert {m.outcome for m in result.measurements} == {Outcome.ERROR}
    assert "logs cannot be read: permission denied" in result.explanation


class Dep:
    def __init__(self, name: str, ok: bool) -> None:
        self.name, self.ok = name, ok

    def check(self) -> DependencyStatus:
        return DependencyStatus(self.name, self.ok, "HTTP 503" if not self.ok else "HTTP 200")

    def describe(self) -> str:
        return self.name


def test_a_firing_alert_fails_the_stage_at_once() -> None:
    alert = FiringAlert("DemoLogErrors", (("alertname", "DemoLogErrors"), ("version", "v2")))
    result = run_stage(AlertWatch(FakeAlerts(AlertsRead((alert,)))).probe("v2"), FakeClock())
    assert result.verdict is Verdict.ROLLBACK
    assert len(result.measurements) == 1
    assert result.reason is not None
    assert result.reason.reason == "alert(s) firing: DemoLogErrors"
    assert result.measurements[0].evidence == ("alert: DemoLogErrors{version=v2}",)


def test_preflight_names_the_alerts_the_unanswered_alertmanager_and_the_dependency_down() -> None:
    alert = FiringAlert("DatabaseDown", (("alertname", "DatabaseDown"),), "2026-11-28T11:00:00Z")
    found = preflight(
        AlertWatch(FakeAlerts(AlertsRead((alert,)))), [Dep("db", True), Dep("payments", False)]
    )
    assert found[0].startswith("alert(s) already firing: DatabaseDown (do not deploy into an")
    assert found[1] == "dependency down: payments (HTTP 503)"
    unanswered = preflight(AlertWatch(FakeAlerts(AlertsRead(error="refused"))), [])
    assert unanswered == ["alerts cannot be evaluated (refused)"]
    assert preflight(AlertWatch(FakeAlerts(AlertsRead())), [Dep("db", True)]) == []


def test_the_log_errors_fault_logs_errors_while_answering_200_on_time() -> None:
    from deployflow.sandbox.demo_app import DemoApp, parse_faults

    fault = parse_faults('{"v4": {"log_errors": 0.5}}')["v4"]
    lines: list[str] = []
    app = DemoApp("v4", fault, base_latency=0.0, log=lines.append)
    answers = [app.handle_app_request("/api/items")[0] for _ in range(10)]
    assert answers == [200] * 10
    assert len(lines) == 5
    assert all(" ERROR v4 /api/items: injected fault (log_errors)" in line for line in lines)
    assert app.metrics.log_errors.labels("v4")._value.get() == 5
    failing = DemoApp("v3", parse_faults('{"v3": {"error_rate": 1}}')["v3"], base_latency=0.0,
                      log=lines.append)  # fmt: skip
    assert failing.handle_app_request("/")[0] == 500
    assert lines[-1].endswith("ERROR v3 / answered 500: injected fault")


class MockPrometheus:
    def __init__(self, result: object, status: str = "success") -> None:
        self.body = {"status": status, "data": {"resultType": "vector", "result": result}}

    def transport(self):
        import httpx

        return httpx.MockTransport(lambda request: httpx.Response(200, json=self.body))


def test_a_prometheus_dependency_judges_every_series() -> None:
    from deployflow.providers.dependencies import PrometheusDependency

    up = [{"metric": {"job": "db"}, "value": [0, "1"]}]
    down = [*up, {"metric": {"job": "db", "instance": "b"}, "value": [0, "0"]}]

    def check(result: object):
        return PrometheusDependency(
            "db", "http://prom.test", 'up{job="db"}', 1.0, None,
            transport=MockPrometheus(result).transport(),
        ).check()  # fmt: skip

    assert check(up).ok
    assert check(down) == DependencyStatus("db", False, 'up{job="db"}: value 0 below 1')
    assert check([]).detail == 'up{job="db"}: the query returned no data'


def test_the_incident_report_shows_each_evidence_line_once(tmp_path) -> None:
    from dataclasses import replace

    from deployflow.notify.report import ReportEvidence, incident_report
    from deployflow.release import RollbackEvidence
    from deployflow.tracking.ledger import Ledger
    from tests.samples import record_in, rolled_back

    outcome = rolled_back()
    assert outcome.rollback is not None
    seen = _measurement(Outcome.FAILED)
    looks = (
        replace(seen, evidence=("log: 12:00:01 ERROR v3 sync failed",)),
        replace(seen, evidence=("log: 12:00:01 ERROR v3 sync failed", "alert: DemoLogErrors")),
    )
    outcome.rollback = replace(outcome.rollback, evidence=RollbackEvidence(last_measurements=looks))
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    report = incident_report(record_in(ledger, outcome), ReportEvidence(), None).markdown
    block = report.split("Log lines matching the error patterns, and alerts that fired:")[1]
    assert block.split("```")[1].strip().splitlines() == [
        "log: 12:00:01 ERROR v3 sync failed",
        "alert: DemoLogErrors",
    ]
