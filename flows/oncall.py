"""People in the loop: the deploy waits for somebody to confirm being on call.

``confirm_on_call`` pauses the flow run with a Prefect input form (``pause_flow_run(
wait_for_input=...)``). The form is answered in the Prefect UI, through the API
(``resume_flow_run(run_id, run_input={...})``) or with ``deployflow approve RUN_ID [--as NAME]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import Running
from pydantic import Field

from deployflow.providers.base import OnCallRoster
from deployflow.providers.oncall import NOBODY_CONFIRMED, confirmation_prompt


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
        _running_again()
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


def _running_again() -> None:
    """A pause that timed out leaves the run Paused, and Prefect runs no task in a paused run;
    the deploy still has to record why it aborted. The server refuses to resume an expired pause,
    so the run is put back to Running by force (the pause is over: nobody can answer it now)."""
    run_id = flow_run.get_id()
    if run_id is None:
        return
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)


class ConfirmationRefused(Exception):
    """The confirmation could not be given; the message says why, for people."""


def approve(run_id: UUID, name: str) -> str:
    """Answer a paused deploy's on-call form as ``name`` (what ``deployflow approve`` does).

    Returns:
        The flow run's name, for the message.

    Raises:
        ConfirmationRefused: No such run, it is not waiting for a confirmation, or its wait ended.
    """
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ConfirmationRefused(f"no flow run {run_id} on this Prefect server") from None
        state = run.state
        if state is None or not state.is_paused() or state.state_details.run_input_keyset is None:
            shown = state.name if state is not None else "no state"
            raise ConfirmationRefused(
                f"flow run {run.name} ({run_id}) is not waiting for an on-call confirmation "
                f"(state: {shown})"
            )
    answer = OnCallConfirmation(watching=True, name=name)
    try:
        resume_flow_run(run_id, run_input=answer.model_dump(include={"watching", "name"}))
    except FlowPauseTimeout:
        raise ConfirmationRefused(
            f"the confirmation window of {run.name} ({run_id}) has closed: it timed out"
        ) from None
    except (NotPausedError, RuntimeError) as exc:
        raise ConfirmationRefused(
            f"flow run {run.name} ({run_id}) was not resumed: {exc}"
        ) from None
    return run.name
