from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Thresholds, Verdict
from deployflow.checks.result import CheckStatus
from deployflow.notify.report import ReportEvidence, deploy_summary, incident_report
from deployflow.release import (
    CheckRecord,
    blocking_checks,
    stage_trigger,
    verification_trigger,
)
from deployflow.rollout import StageResult
from deployflow.spec import CanaryStrategySpec, DirectStrategySpec, SmokeRequest
from deployflow.strategy import choose_strategy
from deployflow.tracking.ledger import Ledger
from deployflow.verify import VerificationReport, check_health, check_metrics, check_smoke
from tests.samples import record_in, rolled_back

pytestmark = pytest.mark.unit

CANARY = CanaryStrategySpec(kind="canary", steps=[10, 100], observe="1m")
DIRECT = DirectStrategySpec(kind="direct", observe="30s")


def test_spec_strategy_is_used_by_default() -> None:
    choice = choose_strategy(CANARY, "auto", has_stable=True)
    assert (choice.kind, choice.steps, choice.observe_seconds) == ("canary", (10, 100), 60.0)


def test_override_to_canary_from_a_direct_spec_uses_default_steps() -> None:
    choice = choose_strategy(DIRECT, "canary", has_stable=True)
    assert choice.steps == (5, 25, 50, 100)
    assert "overridden" in choice.rationale


def test_first_release_goes_direct() -> None:
    choice = choose_strategy(CANARY, "canary", has_stable=False)
    assert choice.kind == "direct"
    assert "first release" in choice.rationale


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        choose_strategy(CANARY, "linear", has_stable=True)  # type: ignore[arg-type]


def test_outcome_json_shape_and_exit_code() -> None:
    outcome = rolled_back()
    data = outcome.to_dict()
    assert outcome.exit_code == 3
    assert data["rollback"] == {
        "stage": 0,
        "weight": 5,
        "metric": "error_rate",
        "value": 0.2,
        "threshold": 0.05,
        "reason": "error rate 20.00% above the maximum 5.00%",
        "requests": None,
        "headline": "error rate 20.0%, above the 5% limit",
        "verified": True,
        "error": None,
        "restore_seconds": None,
    }
    assert data["stages"][0]["verdict"] == "rollback"


def test_summary_and_incident_name_the_trigger_and_evidence(tmp_path) -> None:
    record = record_in(Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}"), rolled_back())
    summary = deploy_summary(record)
    assert "| 1 | 5% canary | rolled back | 20.0% |" in summary
    incident = incident_report(record, ReportEvidence(), None).markdown
    assert "- **Trigger**: error rate 20.0%, above the 5% limit, at stage 1" in incident
    assert "Traceback: boom" in incident  # the log tail the rollback kept


def client(status: int) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(status)))


def test_health_and_smoke_checks() -> None:
    assert check_health(client(200), "http://svc/healthz", name="h").ok
    assert not check_health(client(503), "http://svc/healthz", name="h").ok
    smoke = SmokeRequest(name="items", path="/api/items")
    assert check_smoke(client(200), "http://lb", smoke).ok
    failed = check_smoke(client(500), "http://lb", smoke)
    assert not failed.ok
    assert "expected 200" in failed.detail


def flaky(failing: set[int]) -> tuple[httpx.Client, list[int]]:
    """A client whose n-th request (from 0) answers 500 when n is in ``failing``."""
    sent: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(len(sent))
        return httpx.Response(500 if sent[-1] in failing else 200)

    return httpx.Client(transport=httpx.MockTransport(answer)), sent


def test_one_flaky_smoke_answer_is_within_the_stable_error_rate() -> None:
    smoke = SmokeRequest(name="checkout", path="/api/checkout", attempts=5)
    c, sent = flaky({2})
    check = check_smoke(c, "http://lb", smoke, expected_error_rate=0.005)
    assert check.ok, check.detail
    assert len(sent) == 5
    assert "1 of 5 requests failed (HTTP 500" in check.detail
    assert "within chance" in check.detail


def test_failures_beyond_the_stable_error_rate_fail_the_path() -> None:
    smoke = SmokeRequest(name="checkout", path="/api/checkout", attempts=5)
    check = check_smoke(flaky({1, 3})[0], "http://lb", smoke, expected_error_rate=0.005)
    assert not check.ok
    assert "beyond chance" in check.detail
    # Without a stable error rate to excuse it, a single failure fails the path.
    assert not check_smoke(flaky({2})[0], "http://lb", smoke).ok


class OneSample:
    def __init__(self, sample: MetricSample) -> None:
        self.one = sample

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        return self.one


def test_a_restored_stable_with_too_few_requests_to_judge_is_not_failed_on_them() -> None:
    # Just after a rollback from 100%: 1 error in 8 requests is 12.5%, and proves nothing.
    thin = OneSample(MetricSample(error_rate=1 / 8, p95_seconds=0.02, requests=8))
    check = check_metrics(
        thin, "v1", window_seconds=6, baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=5), required=False,
    )  # fmt: skip
    assert check.ok
    assert check.detail.startswith("no breach, not beyond doubt either: error rate 12.5% over 8")
    # Nothing decides on it but a breach, whoever is judged: doubt is not harm.
    required = check_metrics(
        thin, "v2", window_seconds=6, baseline_p95_seconds=0.02,
        thresholds=Thresholds(min_requests=5),
    )  # fmt: skip
    assert required.ok


def test_metrics_that_cannot_be_read_fail_verification_only_where_required() -> None:
    down = OneSample(MetricSample(None, None, None, error="connection refused"))
    limits = Thresholds(min_requests=5)
    check = check_metrics(
        down, "v2", window_seconds=6, baseline_p95_seconds=0.02, thresholds=limits, required=False
    )
    assert not check.critical
    assert "judged on health and smoke requests alone" in check.detail
    required = check_metrics(
        down, "v2", window_seconds=6, baseline_p95_seconds=0.02, thresholds=limits
    )
    assert required.critical
    assert not required.ok


class ByWindow:
    """A metrics source answering by window length: one sample for short windows, one for long."""

    def __init__(self, short: MetricSample, long: MetricSample, cut: float = 10) -> None:
        self.short, self.long, self.cut = short, long, cut
        self.windows: list[float] = []

    def sample(self, version: str, window_seconds: float) -> MetricSample:
        self.windows.append(window_seconds)
        return self.short if window_seconds <= self.cut else self.long


def test_verification_weighs_everything_the_version_served_since_its_last_stage() -> None:
    # Seen on the sandbox: a 3% canary shown below 5% over its last stage's 1,675 requests was
    # rolled back at verification because one 6 s window (718 requests) could not tell 3.8% from 5%.
    source = ByWindow(
        short=MetricSample(error_rate=0.038, p95_seconds=0.036, requests=718),
        long=MetricSample(error_rate=0.035, p95_seconds=0.036, requests=2_400),
    )
    limits = Thresholds(min_requests=10)
    short_only = check_metrics(
        source, "t2", window_seconds=6, baseline_p95_seconds=0.037, thresholds=limits
    )
    # Doubt over one short window is no breach: the check passes, saying so.
    assert short_only.ok
    assert short_only.detail.startswith("no breach, not beyond doubt either: error rate 3.8%")
    whole = check_metrics(
        source, "t2", window_seconds=6, baseline_p95_seconds=0.037, thresholds=limits,
        evidence_seconds=24,
    )  # fmt: skip
    assert whole.ok, whole.detail
    assert whole.detail == "error rate 3.5%, P95 36.0 ms, 2,400 requests"
    assert sorted(source.windows[-2:]) == [6, 24]


def test_a_fault_since_the_last_stage_fails_verification_through_the_recent_window() -> None:
    # The version turned bad after promotion: 20% over the last 6 s, diluted to 4% overall.
    source = ByWindow(
        short=MetricSample(error_rate=0.20, p95_seconds=0.036, requests=600),
        long=MetricSample(error_rate=0.04, p95_seconds=0.036, requests=6_000),
    )
    check = check_metrics(
        source, "v2", window_seconds=6, baseline_p95_seconds=0.037,
        thresholds=Thresholds(min_requests=10), evidence_seconds=60,
    )  # fmt: skip
    assert not check.ok
    assert check.metric == "error_rate"
    assert check.detail.startswith("over the last 6 s:")


def test_unreachable_endpoint_fails_the_check() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    broken = httpx.Client(transport=httpx.MockTransport(refuse))
    assert not check_health(broken, "http://svc/healthz", name="h").ok


def test_non_critical_failures_do_not_fail_the_report() -> None:
    smoke = SmokeRequest(name="beta page", path="/beta", critical=False)
    report = VerificationReport((check_smoke(client(404), "http://lb", smoke),))
    assert report.ok
    assert report.first_failure is None


def stage(verdict: Verdict, reason: Breach | None = None) -> StageResult:
    now = datetime.now(UTC)
    return StageResult(2, 50, verdict, [], reason, now, now)


def test_a_promoting_stage_triggers_nothing() -> None:
    assert stage_trigger(stage(Verdict.PROMOTE)) is None


def test_a_rolled_back_stage_names_stage_metric_value_threshold() -> None:
    breach = Breach("p95_latency", 0.09, 0.04, "P95 too high")
    trigger = stage_trigger(stage(Verdict.ROLLBACK, breach))
    assert trigger is not None
    assert trigger.to_dict() == {
        "stage": 2,
        "weight": 50,
        "metric": "p95_latency",
        "value": 0.09,
        "threshold": 0.04,
        "reason": "P95 too high",
        "requests": None,
        "headline": "P95 latency 90 ms, above the 40 ms limit",
    }


def test_failed_critical_path_in_verification_triggers_rollback() -> None:
    smoke = SmokeRequest(name="checkout", path="/api/checkout")
    report = VerificationReport((check_smoke(client(502), "http://lb", smoke),))
    trigger = verification_trigger(report)
    assert trigger is not None
    assert trigger.metric == "critical_path"
    assert "checkout" in trigger.reason
    ok = VerificationReport((check_smoke(client(200), "http://lb", smoke),))
    assert verification_trigger(ok) is None


def test_only_failed_and_errored_checks_block() -> None:
    checks = [
        CheckRecord("pre_checks", name, CheckStatus(status), status)
        for name, status in [
            ("lint", "advisory_failed"),
            ("review", "skipped"),
            ("tests", "error"),
            ("build", "passed"),
            ("migrations", "failed"),
        ]
    ]
    assert [c.name for c in blocking_checks(checks)] == ["tests", "migrations"]


def test_a_stage_stopped_for_too_little_evidence_still_shows_what_it_saw() -> None:
    at = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    seen = Measurement(Outcome.INCONCLUSIVE, MetricSample(0.215, 0.02, 13.0), 0.02)
    broken = Measurement(Outcome.ERROR, MetricSample(None, None, None, error="timeout"), 0.02)
    stage = StageResult(0, 5, Verdict.ROLLBACK, [seen, broken], None, at, at)

    assert stage.last_values() == {"error_rate": 0.215, "p95_seconds": 0.02, "requests": 13.0}
    nothing = StageResult(0, 5, Verdict.ROLLBACK, [broken], None, at, at)
    assert nothing.last_values() == {"error_rate": None, "p95_seconds": None, "requests": None}
