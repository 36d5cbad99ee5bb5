"""The deploy told in Slack: the card of the parent message, a line per stage, the outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.notify.slack import deploy_blocks
from deployflow.notify.story import deploy_card, outcome_line, stage_line
from deployflow.release import ReleaseOutcome
from deployflow.rollout import StageResult

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def stage(verdict: Verdict, sample: MetricSample, reason: Breach | None = None) -> StageResult:
    m = Measurement(Outcome.SUCCESSFUL, sample, 0.02)
    return StageResult(0, 5, verdict, [m], reason, NOW, NOW)


def test_a_stage_line_has_figures_for_people() -> None:
    line = stage_line(stage(Verdict.PROMOTE, MetricSample(0.001, 0.01995879120879121, 342.2053)))
    assert line == "Stage 1 · 5% canary · promoted · errors 0.10%, P95 20 ms, 342 requests"


def test_a_rolled_back_stage_says_why_in_a_headline_then_its_figures() -> None:
    breach = Breach("error_rate", 0.2, 0.05, "error rate 20.00% > 5.00% (99.9% CI 12.1-30.4%)")
    line = stage_line(stage(Verdict.ROLLBACK, MetricSample(0.2, 0.03, 100), breach))
    assert line == (
        "Stage 1 · 5% canary · *rollback*: error rate 20.0% over 100 requests, above the 5% "
        "limit\n> errors 20.0%, P95 30 ms, 100 requests"
    )


def test_a_stage_that_is_not_a_canary_says_what_it_observed() -> None:
    # Blue-green's green in isolation has no users (weight 0): "0% canary" told people nothing.
    green = replace(
        stage(Verdict.PROMOTE, MetricSample(0.0, 0.02, 40)), weight=0, label="v2 in isolation"
    )
    assert stage_line(green).startswith("Stage 1 · v2 in isolation · promoted · errors 0%, P95")
    assert green.to_dict()["observed"] == "v2 in isolation"


def test_the_outcome_line_names_status_and_reason() -> None:
    o = ReleaseOutcome(service="shop", environment="prod", version="v3", status="rolled_back")
    o.message = "rolled back to v2: error rate 20% > 5%"
    assert outcome_line(o) == ":rewind: *rolled back* to v2: error rate 20% &gt; 5%"
    o.status, o.message = "aborted", "on-call not confirmed; nothing was started"
    assert outcome_line(o) == ":no_entry: *aborted*: on-call not confirmed; nothing was started"


def test_the_card_shows_the_facts_and_links_and_keeps_mentions() -> None:
    card = deploy_card(
        "fallback text",
        service="shop",
        version="v2",
        environment="production",
        strategy="canary",
        stages=[5, 25, 100],
        on_call="<@U024BE7LH>",
        dashboard_url="http://grafana.test/d/x",
        run_url=None,
    )
    assert dict(card.fields)["On-call"] == "<@U024BE7LH>"
    assert dict(card.fields)["Stages"] == "5% → 25% → 100%"
    blocks = deploy_blocks(card, ":white_check_mark: *succeeded*")
    assert blocks[0]["text"]["text"] == ":white_check_mark: *succeeded*"
    assert blocks[-1]["elements"][0]["text"] == "<http://grafana.test/d/x|Dashboard>"
    assert card.text == "fallback text"
