"""People in the loop: the deploy waits for somebody to confirm being on call, and a canary's
``pause`` steps wait for somebody to approve the next stage.

``confirm_on_call`` and ``approve_next_stage`` pause the flow run with a Prefect input form
(``pause_flow_run(wait_for_input=...)``). A form is answered in the Prefect UI, through the API
(``resume_flow_run(run_id, run_input={...})``) or with ``deployflow approve RUN_ID [--as NAME]``
(RUN_ID: the deploy's run, or the rollout subflow's run that waits).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import Field

from deployflow.gates import approval_prompt, nobody_approved
from deployflow.providers.base import OnCallRoster
from deployflow.providers.oncall import NOBODY_CONFIRMED, confirmation_prompt
from deployflow.rollout import StageResult


class OnCallConfirmation(RunInput):
    """The form a paused deploy waits for."""

    watching: bool = Field(False, description="I am on call and watching this release.")
    name: str = Field(min_length=1, max_length=200, description="Your name.")


@dataclass(frozen=True)
class ConfirmationAnswer:
    """Who confirmed, or why the deploy must not go on (exactly one is set)."""

    confirmed_by: str | None = None
    refusal: str | None = None


def poll_interval(timeout: float) -> int:
    """How often the paused run asks whether it was answered: every 10 s, faster for short
    waits (a 2-second wait must not sleep 10)."""
    return max(1, min(10, math.floor(timeout / 10)))


def confirm_on_call(
    service: str,
    version: str,
    environment: str,
    roster: OnCallRoster | None,
    timeout: float,
) -> ConfirmationAnswer:
    """Pause this flow run until somebody confirms being on call; never raises for a missing
    answer. Call it from the flow function (a paused run runs no tasks)."""
    logger = get_run_logger()
    form = OnCallConfirmation.with_initial_data(
        description=confirmation_prompt(service, version, environment, roster, timeout),
        name=roster.people[0].name if roster and len(roster.people) == 1 else "",
        watching=False,
    )
    seconds = math.ceil(timeout)
    logger.warning(
        "waiting up to %ss for the on-call engineer to confirm: answer the form in the UI or run "
        "`deployflow approve %s --as NAME`",
        seconds,
        flow_run.get_id(),
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form, timeout=seconds, poll_interval=poll_interval(timeout)
        )
    except FlowPauseTimeout:
        running_again()
        logger.error("%s within %ss: aborting before any traffic moved", NOBODY_CONFIRMED, seconds)
        return ConfirmationAnswer(refusal=NOBODY_CONFIRMED)
    except Exception as exc:  # resumed without the form, or the pause itself refused: fail safe
        logger.exception("the on-call confirmation could not be read")
        return ConfirmationAnswer(
            refusal=f"{NOBODY_CONFIRMED} (the confirmation could not be read: {exc})"
        )
    if not answer.watching:
        refusal = f"{answer.name} answered without confirming being on call and watching"
        logger.error("%s: aborting before any traffic moved", refusal)
        return ConfirmationAnswer(refusal=refusal)
    logger.info("%s confirmed being on call and watching this release", answer.name)
    return ConfirmationAnswer(confirmed_by=answer.name)


def running_again() -> None:
    """A pause that timed out leaves the run Paused, and Prefect runs no task in a paused run;
    the deploy still has to record why it aborted (or roll back). The server refuses to resume
    an expired pause, so the run is put back to Running by force (the pause is over: nobody can
    answer it now)."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)


class StageApproval(RunInput):
    """The form a canary's ``pause`` step waits for."""

    approved: bool = Field(False, description="Go on to the next stage of this canary.")
    name: str = Field(min_length=1, max_length=200, description="Your name.")


@dataclass(frozen=True)
class StageAnswer:
    """Who approved the next stage, or why the canary must roll back (exactly one is set)."""

    approved_by: str | None = None
    refusal: str | None = None


def approve_next_stage(
    version: str,
    stages: Sequence[StageResult],
    next_weight: int,
    timeout: float,
    *,
    description: str | None = None,
    timeout_refusal: str | None = None,
) -> StageAnswer:
    """Pause this (rollout) flow run until somebody approves the stage at ``next_weight``; the
    form shows the figures of ``stages`` so far (or ``description``). Never raises: no answer, a
    refusal or an answer that cannot be read is a refusal (the safe side is rolling back);
    ``timeout_refusal`` is the refusal when nobody answers in time."""
    logger = get_run_logger()
    last = stages[-1]
    form = StageApproval.with_initial_data(
        description=description or approval_prompt(version, stages, next_weight, timeout),
        name="",
        approved=False,
    )
    seconds = math.ceil(timeout)
    logger.warning(
        "pause after stage %d (%d%%): waiting up to %ss for approval to go to %d%%: answer the "
        "form in the UI or run `deployflow approve %s --as NAME`",
        last.index + 1,
        last.weight,
        seconds,
        next_weight,
        flow_run.get_parent_flow_run_id() or flow_run.get_id(),
    )
    try:
        answer = pause_flow_run(
            wait_for_input=form, timeout=seconds, poll_interval=poll_interval(timeout)
        )
    except FlowPauseTimeout:
        running_again()
        refusal = timeout_refusal or nobody_approved(last, next_weight, seconds)
        logger.error("%s: rolling back", refusal)
        return StageAnswer(refusal=refusal)
    except Exception as exc:  # resumed without the form, or the pause itself refused: fail safe
        logger.exception("the approval could not be read")
        return StageAnswer(refusal=f"the approval of {next_weight}% could not be read: {exc}")
    if not answer.approved:
        refusal = f"{answer.name} did not approve going from {last.weight}% to {next_weight}%"
        logger.error("%s: rolling back", refusal)
        return StageAnswer(refusal=refusal)
    logger.info("%s approved going to %d%%", answer.name, next_weight)
    return StageAnswer(approved_by=answer.name)


class ConfirmationRefused(Exception):
    """The confirmation could not be given; the message says why, for people."""


@dataclass(frozen=True)
class Approval:
    """What ``approve`` answered: the run that waited and which form it was."""

    run_name: str
    form: str  # "on-call" or "stage"


def _waiting(client: SyncPrefectClient, run: FlowRun) -> FlowRun | None:
    """``run`` if it waits for a form, else its paused subflow run that does (a canary's pause
    waits in the rollout subflow), else None."""
    state = run.state
    if state is not None and state.is_paused() and state.state_details.run_input_keyset:
        return run
    children = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])),
        )
    )
    for child in children:
        if child.state is not None and child.state.state_details.run_input_keyset:
            return child
    return None


def approve(run_id: UUID, name: str) -> Approval:
    """Answer a paused deploy's form as ``name`` (what ``deployflow approve`` does): the on-call
    confirmation, or the approval of a canary's next stage.

    Returns:
        The flow run's name and which form was answered, for the message.

    Raises:
        ConfirmationRefused: No such run, it is not waiting for an answer, or its wait ended.
    """
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ConfirmationRefused(f"no flow run {run_id} on this Prefect server") from None
        waiting = _waiting(client, run)
        if waiting is None or waiting.state is None:
            shown = run.state.name if run.state is not None else "no state"
            raise ConfirmationRefused(
                f"flow run {run.name} ({run_id}) is not waiting for an on-call confirmation "
                f"or a stage approval (state: {shown})"
            )
        keyset = waiting.state.state_details.run_input_keyset or {}
        try:
            schema = json.loads(client.read_flow_run_input(waiting.id, keyset["schema"]))
        except Exception:  # an old run without its schema: it is the on-call form
            schema = {}
    stage_form = "approved" in schema.get("properties", {})
    answer = (
        StageApproval(approved=True, name=name).model_dump(include={"approved", "name"})
        if stage_form
        else OnCallConfirmation(watching=True, name=name).model_dump(include={"watching", "name"})
    )
    try:
        resume_flow_run(waiting.id, run_input=answer)
    except FlowPauseTimeout:
        raise ConfirmationRefused(
            f"the window of {run.name} ({run_id}) has closed: it timed out"
        ) from None
    except (NotPausedError, RuntimeError) as exc:
        raise ConfirmationRefused(
            f"flow run {run.name} ({run_id}) was not resumed: {exc}"
        ) from None
    return Approval(run.name, "stage" if stage_form else "on-call")
