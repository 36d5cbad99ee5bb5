"""Manual gates inside a canary (a ``pause`` step): what the person is shown, and what a gate
that is not passed means for the rollout. Plain data; ``flows/oncall.py`` pauses the run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from deployflow.analysis import Breach, Measurement, Verdict
from deployflow.figures import duration
from deployflow.manual_rollback import MANUAL_METRIC
from deployflow.notify.story import stage_line
from deployflow.rollout import StageResult

GATE_METRIC = "manual gate"


def approval_prompt(
    version: str, stages: Sequence[StageResult], next_weight: int, timeout: float
) -> str:
    """The form's text: the stages so far with their figures, and what approving does."""
    last = stages[-1]
    lines = [
        f"Canary {version} paused after stage {last.index + 1} ({last.weight}% of traffic).",
        "",
        *(f"- {stage_line(s)}" for s in stages),
        "",
        f"Approve to go on to {next_weight}%. Without an approval within {duration(timeout)} "
        "the canary is rolled back. It is judged against the stable version meanwhile: a look "
        "that fails rolls it back at once.",
    ]
    return "\n".join(lines)


def nobody_approved(last: StageResult, next_weight: int, timeout: float) -> str:
    return (
        f"nobody approved going from {last.weight}% to {next_weight}% within "
        f"{duration(timeout)} (after stage {last.index + 1})"
    )


def gate_refused(last: StageResult, refusal: str) -> StageResult:
    """The stage a pause followed, now ending the rollout: its figures promoted it, the gate did
    not, so the rollout stops there and rolls back like any stage that did not promote."""
    breach = Breach(metric=GATE_METRIC, value=None, threshold=None, reason=refusal)
    return dataclasses.replace(last, verdict=Verdict.ROLLBACK, reason=breach)


def failed_while_paused(last: StageResult, look: Measurement) -> StageResult:
    """The stage a pause followed, ended by a look that failed during the wait: it rolls back
    on that look's breach (the metric that tripped, with its figures), whatever the answer."""
    first = look.breaches[0] if look.breaches else Breach("inconclusive", None, None, look.note)
    where = f"while paused for approval after stage {last.index + 1}"
    # A person's rollback leads with who asked and why: the headline keeps its first words.
    reason = (
        f"{first.reason} ({where})" if first.metric == MANUAL_METRIC else f"{where}: {first.reason}"
    )
    breach = dataclasses.replace(first, reason=reason)
    return dataclasses.replace(
        last,
        verdict=Verdict.ROLLBACK,
        reason=breach,
        measurements=[*last.measurements, look],
    )


def inconclusive_prompt(
    version: str, stages: Sequence[StageResult], next_step: str, timeout: float
) -> str:
    """The form's text when a stage was shown neither healthy nor harmful in its time and the
    spec asks a person (``on_inconclusive: pause``)."""
    last = stages[-1]
    why = last.reason.reason if last.reason is not None else last.explanation
    lines = [
        f"Canary {version}: stage {last.index + 1} ({last.observed}) was shown neither healthy "
        "nor harmful in its time.",
        "",
        f"Last look: {why}",
        "",
        *(f"- {stage_line(s)}" for s in stages),
        "",
        f"Tick 'approved' to promote it to {next_step}; leave it unticked to roll back. Without "
        f"an answer within {duration(timeout)} the canary is rolled back. It is judged against "
        "the stable version meanwhile: a look that fails rolls it back at once.",
    ]
    return "\n".join(lines)


def nobody_decided(timeout: float) -> str:
    return f"nobody decided within {duration(timeout)}"


def decided_by_person(
    last: StageResult, approved_by: str | None, refusal: str | None
) -> StageResult:
    """A paused stage (``on_inconclusive: pause``) after the person's answer: promoted by
    ``approved_by``, or rolled back for ``refusal`` (nobody answered, or they chose to)."""
    if approved_by is not None:
        note = (
            f"promoted by {approved_by}: the stage was shown neither healthy nor harmful in "
            "its time"
        )
        return dataclasses.replace(last, verdict=Verdict.PROMOTE, reason=None, note=note)
    why = f"stage {last.index + 1} ({last.observed}) was shown neither healthy nor harmful"
    if last.reason is not None:
        why = last.reason.reason.removesuffix("; a person decides")
    breach = Breach(GATE_METRIC, None, None, f"{refusal or 'rolled back'} after: {why}")
    return dataclasses.replace(last, verdict=Verdict.ROLLBACK, reason=breach)
