"""Manual gates in a canary's steps (``pause``): where they may stand, what they wait for, and
what a gate that is not passed does to the rollout."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.gates import (
    GATE_METRIC,
    approval_prompt,
    failed_while_paused,
    gate_refused,
    nobody_approved,
)
from deployflow.release import stage_trigger
from deployflow.rollout import StageResult
from deployflow.spec import parse_spec
from deployflow.strategy import choose_strategy
from tests.samples import SANDBOX_ENV, example, problems

pytestmark = pytest.mark.unit


def with_steps(steps: object) -> dict:
    data = example()
    data["strategy"]["steps"] = steps
    return data


def test_pause_steps_become_gates_after_the_stage_before_them() -> None:
    steps = yaml.safe_load("[5, 25, pause, 50, {pause: {timeout: 10m}}, 100]")
    spec = parse_spec(with_steps(steps), env=SANDBOX_ENV)
    assert spec.strategy.weights == [5, 25, 50, 100]
    assert spec.strategy.pauses == [(1, 1800.0), (2, 600.0)]
    plan = choose_strategy(spec.strategy, "auto", has_stable=True)
    assert plan.steps == (5, 25, 50, 100)
    assert (plan.pause_after(0), plan.pause_after(1), plan.pause_after(2)) == (None, 1800.0, 600.0)


@pytest.mark.parametrize(
    ("steps", "says"),
    [
        (["pause", 50, 100], "a pause cannot be the first step"),
        ([50, 100, "pause"], "a pause cannot be the last step"),
        ([5, "pause", "pause", 100], "steps 2 and 3 are both pauses"),
        ([5, "wait", 100], "step 2 is 'wait': a step is a percentage (1 to 100), 'pause'"),
        (
            [5, {"pause": {"timeout": "0s"}}, 100],
            "step 2 is not a pause ({pause: {timeout: 30m}}): pause.timeout: a duration must be "
            "greater than zero",
        ),
        ([5, {"pause": {"timeout": "soon"}}, 100], "not a duration"),
        ([5, {"pause": {"for": "1m"}}, 100], "pause.for: unknown key (a pause has only timeout)"),
        ([5, {"pause": None}, 100], None),
        ([50, "pause", 25, 100], "strictly increasing"),
    ],
)
def test_bad_pauses_are_refused_naming_the_field(steps: list, says: str | None) -> None:
    if says is None:  # `- pause:` with nothing under it is a pause with the default timeout
        assert parse_spec(with_steps(steps), env=SANDBOX_ENV).strategy.pauses == [(0, 1800.0)]
        return
    found = problems(with_steps(steps))
    assert len(found) == 1, found
    assert any(path.startswith("strategy.canary.steps") for path in found), found
    assert any(says in message for message in found.values()), found


def stage(index: int, weight: int) -> StageResult:
    m = Measurement(Outcome.SUCCESSFUL, MetricSample(0.001, 0.02, 342.2), 0.02)
    at = datetime(2026, 11, 28, 9, index, tzinfo=UTC)
    return StageResult(index, weight, Verdict.PROMOTE, [m], None, at, at)


def test_the_form_shows_the_stage_figures_so_far_and_what_happens() -> None:
    text = approval_prompt("v2", [stage(0, 5), stage(1, 25)], 50, 1800)
    assert "Canary v2 paused after stage 2 (25% of traffic)." in text
    assert "- Stage 1 · 5% canary · promoted · errors 0.10%, P95 20 ms, 342 requests" in text
    assert "- Stage 2 · 25% canary · promoted" in text
    assert (
        "Approve to go on to 50%. Without an approval within 30 min the canary is rolled back."
        in text
    )
    assert "a look that fails rolls it back at once" in text


def test_a_refused_gate_rolls_back_from_the_stage_it_followed() -> None:
    last = stage(1, 25)
    why = nobody_approved(last, 50, 2)
    assert why == "nobody approved going from 25% to 50% within 2 s (after stage 2)"
    trigger = stage_trigger(gate_refused(last, why))
    assert trigger is not None
    assert (trigger.stage, trigger.weight, trigger.metric, trigger.reason) == (
        1,
        25,
        GATE_METRIC,
        why,
    )


def test_a_look_that_failed_during_the_pause_rolls_back_on_its_own_breach() -> None:
    last = stage(1, 25)
    breach = Breach("error_rate", 0.3, 0.05, "error rate canary 30.0% over 600 requests")
    look = Measurement(Outcome.FAILED, MetricSample(0.3, 0.02, 600.0), 0.02, (breach,))

    ended = failed_while_paused(last, look)

    assert ended.verdict is Verdict.ROLLBACK
    assert ended.measurements == [*last.measurements, look]
    trigger = stage_trigger(ended)
    assert trigger is not None
    assert (trigger.stage, trigger.weight, trigger.metric, trigger.value) == (
        1,
        25,
        "error_rate",
        0.3,
    )
    assert trigger.reason == (
        "while paused for approval after stage 2: error rate canary 30.0% over 600 requests"
    )


def test_a_persons_rollback_during_the_pause_leads_with_who_asked_and_why() -> None:
    last = stage(0, 5)
    asked = Breach("manual", None, None, "rollback asked by alice: search returns nothing")
    look = Measurement(Outcome.FAILED, MetricSample(None, None, None), 0.02, (asked,))

    trigger = stage_trigger(failed_while_paused(last, look))

    assert trigger is not None
    assert (trigger.stage, trigger.metric) == (0, "manual")
    assert trigger.reason == (
        "rollback asked by alice: search returns nothing (while paused for approval after stage 1)"
    )
    # The 13-word headline keeps the person's reason whole.
    assert trigger.headline.startswith("rollback asked by alice: search returns nothing")
