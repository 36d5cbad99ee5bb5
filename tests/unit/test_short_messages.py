"""Short messages, details on demand: whatever stopped a deploy, each message that tells it leads
with a headline of at most ``HEADLINE_WORDS`` words naming the trigger, then the figures once;
the analysis's full statistics (confidence intervals, 60-word reasons) stay in the incident
report."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.figures import HEADLINE_WORDS, confidence
from deployflow.gates import gate_refused
from deployflow.notify.story import log_line, outcome_line, rollback_line, stage_line
from deployflow.release import (
    ReleaseOutcome,
    Trigger,
    stage_trigger,
    step_failed_trigger,
    verification_trigger,
)
from deployflow.rollout import StageResult, canary_gone
from deployflow.story import Deploy, RolledBack
from deployflow.verify import VerificationCheck, VerificationReport

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
DEPLOY = Deploy("shop", "v2", "production", previous_version="v1")
# What the analysis writes: the statistics a reviewer checks, far beyond a headline.
STATISTICS = (
    "error rate canary 11.3% (99.9% CI 5.3-21.7%) over 60 requests vs stable 0.10% over 1,140 "
    "requests: even at 6.2%, the lowest rate these requests plausibly allow, the 120 requests "
    "expected by the stage's last look could not show it below 5% (upper bound 9.9%)"
)
QUERIES_FAILED = (
    "4 metric queries failed in a row (limit 3): query error_rate for v2 at "
    "http://prometheus.internal:9090 failed: connection refused after 3 attempts"
)
LONG_FAULT = (
    "HAProxy admin socket /run/haproxy/admin.sock answered 'Unknown command' to 'set server "
    "shop/canary weight 25' after 3 attempts over 4.2 s; the router's state is not known"
)


def look(rate: float | None, p95: float | None, count: float | None, **fields) -> Measurement:
    outcome = fields.pop("outcome", Outcome.FAILED)
    return Measurement(outcome, MetricSample(rate, p95, count, **fields), 0.02)


def rolled_back(breach: Breach, *looks: Measurement) -> StageResult:
    return StageResult(1, 25, Verdict.ROLLBACK, list(looks), breach, NOW, NOW)


def stage_kinds() -> dict[str, StageResult]:
    figures = look(0.113, 0.0213, 60.4)
    promoted = StageResult(1, 25, Verdict.PROMOTE, [figures], None, NOW, NOW)
    refusal = (
        "not approved by alice@example.com: the checkout latency looks off in the business "
        "dashboard, hold it until the payments team confirms the new card processor client"
    )
    return {
        "error rate": rolled_back(Breach("error_rate", 0.113, 0.05, STATISTICS), figures),
        "P95": rolled_back(
            Breach("p95_latency", 0.48, 0.25, f"P95 480.0 ms against 250.0 ms: {STATISTICS}"),
            look(0.001, 0.48, 640),
        ),
        "canary down": rolled_back(
            canary_gone(
                "v2 is no longer running (local-process target): process 4242 exited with code "
                "137 after 41 s, killed by the kernel's out-of-memory killer",
                0.02,
            ).breaches[0],
            figures,
        ),
        "metrics": rolled_back(
            Breach("metrics", None, None, QUERIES_FAILED),
            look(None, None, None, error="connection refused", outcome=Outcome.ERROR),
        ),
        "inconclusive": rolled_back(
            Breach("inconclusive", None, None, STATISTICS), look(0.011, 0.0213, 60.4)
        ),
        "manual gate": gate_refused(promoted, refusal),
    }


def other_triggers() -> dict[str, Trigger]:
    failed = VerificationCheck(
        "smoke: checkout", False, True,
        "POST /api/checkout: 7 of 20 requests failed (HTTP 502, expected 200); chance at "
        "stable's error rate 0.10%: 1.2e-17: beyond chance",
    )  # fmt: skip
    breach = VerificationCheck(
        "metrics: v2", False, True, STATISTICS, metric="p95_latency", value=0.48, threshold=0.25
    )
    kinds = {
        "verification": verification_trigger(VerificationReport((failed,))),
        "verification with a figure": verification_trigger(VerificationReport((breach,))),
        "step failed": step_failed_trigger("set-traffic", LONG_FAULT),
    }
    return {name: trigger for name, trigger in kinds.items() if trigger is not None}


def words(line: str) -> int:
    return len(line.split())


def told(trigger: Trigger) -> list[str]:
    """The first line of every message that tells a rollback: the Slack notice, the thread's
    closing reply, the run log."""
    outcome = ReleaseOutcome("shop", "production", "v2", status="rolled_back")
    outcome.message = f"rolled back to v1: {trigger.headline}"
    logged = log_line(RolledBack(trigger, "v1"), DEPLOY)
    assert logged is not None
    return [
        rollback_line(RolledBack(trigger, "v1"), DEPLOY).splitlines()[0],
        outcome_line(outcome),
        logged[1],
    ]


@pytest.mark.parametrize("kind", list(stage_kinds()))
def test_a_stage_rollback_is_told_in_a_headline_then_its_figures_once(kind: str) -> None:
    stage = stage_kinds()[kind]
    trigger = stage_trigger(stage, max_error_rate=0.05)
    assert trigger is not None
    reply = stage_line(stage)
    headline, details = reply.split("\n")

    for line in [headline, *told(trigger)]:
        assert words(line) <= HEADLINE_WORDS, (kind, line)
        assert "CI" not in line  # the statistics are the incident report's
    assert headline.startswith("Stage 2 · 25% canary · *rollback*: ")
    assert details.startswith("> ")
    assert "CI" not in details
    # Then what the stage last measured, once ("no data" only when nothing was measured).
    measured = stage.last_values()["requests"] is not None
    assert details.count("errors ") == (1 if measured else 0)
    assert ("no data" in details) is not measured


def test_the_headlines_name_the_figure_and_the_limit_when_there_is_one() -> None:
    kinds = stage_kinds()
    error_rate = stage_trigger(kinds["error rate"], 0.05)
    p95 = stage_trigger(kinds["P95"], 0.05)
    unproven = stage_trigger(kinds["inconclusive"], 0.05)
    assert error_rate is not None
    assert p95 is not None
    assert unproven is not None
    assert error_rate.headline == "error rate 11.3% over 60 requests, above the 5% limit"
    assert p95.headline == "P95 latency 480 ms, above the 250 ms limit"
    assert unproven.headline == "error rate 1.1% over 60 requests: not shown below the 5% limit"
    assert STATISTICS in (error_rate.reason, unproven.reason)  # kept for the report


@pytest.mark.parametrize("kind", list(other_triggers()))
def test_a_rollback_without_a_stage_is_told_in_a_headline(kind: str) -> None:
    trigger = other_triggers()[kind]
    for line in told(trigger):
        assert words(line) <= HEADLINE_WORDS, (kind, line)
        assert "CI" not in line
    assert len(trigger.reason.split()) > HEADLINE_WORDS  # the whole of it stays in the report


def test_a_confidence_level_is_never_shown_as_100_percent() -> None:
    assert [confidence(x) for x in (0.999, 0.8, 0.99998, 0.9667)] == [
        "99.9%",
        "80%",
        "99.998%",
        "96.7%",
    ]
