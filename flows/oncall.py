"""People in the loop: the deploy waits for somebody to confirm being on call, and a canary's
``pause`` steps wait for somebody to approve the next stage.

``confirm_on_call`` and ``approve_next_stage`` pause the *deploy* run with a Prefect input form
(``ask_at_deploy_run``), also when the rollout subflow is the one waiting: a person looking at the
deploy sees it Paused, with the form behind its Resume button. A form is answered in the Prefect
UI, through the API (``resume_flow_run(run_id, run_input={...})``) or with ``deployflow approve
RUN_ID [--as NAME]`` (RUN_ID: the deploy's run, or its rollout subflow's). Every answer (or its
absence) is a row of the deploy run's ``deploy-gates`` table artifact: which gate, what, who, when.
"""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from prefect import State, get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync
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
    gate = "on-call confirmation"
    try:
        answer = ask_at_deploy_run(form, seconds, poll_interval(timeout))
    except FlowPauseTimeout:
        running_again()
        logger.error("%s within %ss: aborting before any traffic moved", NOBODY_CONFIRMED, seconds)
        record_answer(gate, f"no answer within {seconds}s", None)
        return ConfirmationAnswer(refusal=NOBODY_CONFIRMED)
    except Exception as exc:  # resumed without the form, or the pause itself refused: fail safe
        logger.exception("the on-call confirmation could not be read")
        record_answer(gate, "could not be read", None)
        return ConfirmationAnswer(
            refusal=f"{NOBODY_CONFIRMED} (the confirmation could not be read: {exc})"
        )
    if not answer.watching:
        refusal = f"{answer.name} answered without confirming being on call and watching"
        logger.error("%s: aborting before any traffic moved", refusal)
        record_answer(gate, "not confirmed", answer.name)
        return ConfirmationAnswer(refusal=refusal)
    logger.info("%s confirmed being on call and watching this release", answer.name)
    record_answer(gate, "confirmed", answer.name)
    return ConfirmationAnswer(confirmed_by=answer.name)


def running_again() -> None:
    """A pause that timed out leaves the deploy run Paused, and Prefect runs no task in a paused
    run; the deploy still has to record why it aborted (or roll back). The server refuses to
    resume an expired pause, so the run is put back to Running by force (the pause is over:
    nobody can answer it now)."""
    with get_client(sync_client=True) as client:
        run_id = deploy_run_id(client)
        if run_id is not None:
            client.set_flow_run_state(run_id, Running(), force=True)


F = TypeVar("F", bound=RunInput)


def deploy_run_id(client: SyncPrefectClient) -> UUID | None:
    """The run a person looks at: the outermost flow run above this one (this run when it has
    no parent); None outside a flow run."""
    current = flow_run.get_id()
    if current is None:
        return None
    run_id = UUID(str(current))
    for _ in range(10):  # subflows nest a few levels at most
        parent_task = client.read_flow_run(run_id).parent_task_run_id
        if parent_task is None:
            break
        run_id = client.read_task_run(parent_task).flow_run_id or run_id
    return run_id


def ask_at_deploy_run(form: type[F], timeout: int, poll_interval: int) -> F:
    """Pause the deploy run with ``form`` and return its answer once it is resumed.

    From the deploy run itself this is ``pause_flow_run``. From a subflow (the rollout) it is the
    same protocol applied to the deploy run: the form's schema saved on it, the deploy run set
    Paused with the form's keys (the UI's Resume button then opens the form), and its state
    polled until a person (or ``deployflow approve``) resumed it, every ``poll_interval`` seconds
    up to ``timeout``.

    Raises:
        FlowPauseTimeout: Nobody answered in time (the deploy run stays Paused: ``running_again``).
        RuntimeError: The pause was refused, or the deploy run left it otherwise (cancelled).
    """
    with get_client(sync_client=True) as client:
        target = deploy_run_id(client)
        here = flow_run.get_id()
        if target is None or here is None or target == UUID(str(here)):
            return _synchronous(
                pause_flow_run(wait_for_input=form, timeout=timeout, poll_interval=poll_interval)
            )
        paused: State[None] = Paused(
            timeout_seconds=timeout, reschedule=False, pause_key=str(uuid4())
        )
        keyset = keyset_from_paused_state(paused)
        paused.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
        state = propose_state_sync(client, paused, flow_run_id=target)
        if not state.is_paused():
            raise RuntimeError(f"the deploy run cannot be paused: it is {state.name}")
        form.save(keyset, flow_run_id=target)  # after the pause, as pause_flow_run does
        deadline = time.monotonic() + timeout
        while True:
            current = client.read_flow_run(target).state
            if current is not None and current.is_running():
                return _synchronous(form.load(keyset, flow_run_id=target))
            if current is None or not current.is_paused():
                shown = current.name if current is not None else "without a state"
                raise RuntimeError(f"the deploy run left its pause unanswered: it is {shown}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise FlowPauseTimeout("the deploy run was paused and never resumed")
            time.sleep(min(poll_interval, left))


def _synchronous(answer: F | Coroutine[Any, Any, F]) -> F:
    """Prefect's dispatching calls return their sync variant's value when called from sync code."""
    assert not inspect.isawaitable(answer)
    return answer


GATES_ARTIFACT = "deploy-gates"


def record_answer(gate: str, answer: str, by: str | None) -> None:
    """Add a row (gate, answer, who, when) to the deploy run's ``deploy-gates`` table artifact.
    Best effort: a gate's answer decides the deploy whether or not its row could be written."""
    row = {
        "gate": gate,
        "answer": answer,
        "by": by or "",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        with get_client(sync_client=True) as client:
            run_id = deploy_run_id(client)
            if run_id is None:
                return
            found = client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
                    key=ArtifactFilterKey(any_=[GATES_ARTIFACT]),
                )
            )
            description = "Who confirmed being on call and who approved each stage, when (UTC)."
            if not found:
                client.create_artifact(
                    ArtifactCreate(
                        key=GATES_ARTIFACT,
                        type="table",
                        data=json.dumps([row]),
                        description=description,
                        flow_run_id=run_id,
                    )
                )
                return
            rows = [*json.loads(str(found[0].data)), row]
            client.update_artifact(found[0].id, ArtifactUpdate(data=json.dumps(rows)))
    except Exception as exc:
        get_run_logger().warning("the gate's answer was not recorded (%s)", type(exc).__name__)


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
    gate = f"stage {last.index + 1} ({last.weight}%) to {next_weight}%"
    try:
        answer = ask_at_deploy_run(form, seconds, poll_interval(timeout))
    except FlowPauseTimeout:
        running_again()
        refusal = timeout_refusal or nobody_approved(last, next_weight, seconds)
        logger.error("%s: rolling back", refusal)
        record_answer(gate, f"no answer within {seconds}s", None)
        return StageAnswer(refusal=refusal)
    except Exception as exc:  # resumed without the form, or the pause itself refused: fail safe
        logger.exception("the approval could not be read")
        record_answer(gate, "could not be read", None)
        return StageAnswer(refusal=f"the approval of {next_weight}% could not be read: {exc}")
    if not answer.approved:
        refusal = f"{answer.name} did not approve going from {last.weight}% to {next_weight}%"
        logger.error("%s: rolling back", refusal)
        record_answer(gate, "not approved", answer.name)
        return StageAnswer(refusal=refusal)
    logger.info("%s approved going to %d%%", answer.name, next_weight)
    record_answer(gate, "approved", answer.name)
    return StageAnswer(approved_by=answer.name)


class ConfirmationRefused(Exception):
    """The confirmation could not be given; the message says why, for people."""


@dataclass(frozen=True)
class Approval:
    """What ``approve`` answered: the run that waited and which form it was."""

    run_name: str
    form: str  # "on-call" or "stage"


def _waiting(client: SyncPrefectClient, run: FlowRun) -> FlowRun | None:
    """``run`` if it waits for a form, else the deploy run above it that does (a canary's pause
    is asked at the deploy run), else its paused subflow run that does (runs from before), else
    None."""
    state = run.state
    if state is not None and state.is_paused() and state.state_details.run_input_keyset:
        return run
    if run.parent_task_run_id is not None:
        parent_id = client.read_task_run(run.parent_task_run_id).flow_run_id
        if parent_id is not None:
            found = _waiting(client, client.read_flow_run(parent_id))
            if found is not None:
                return found
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
    return answer_form(run_id, name, yes=True)


def refuse(run_id: UUID, name: str) -> Approval:
    """Answer a paused deploy's form as ``name`` with a no (what a person's ``deployflow
    rollback`` does to a deploy waiting at a pause): the canary rolls back, or a deploy waiting
    for its on-call confirmation ends before any traffic moved. Raises as ``approve``."""
    return answer_form(run_id, name, yes=False)


def answer_form(run_id: UUID, name: str, *, yes: bool) -> Approval:
    """Answer the form the deploy ``run_id`` (or its rollout subflow) waits on, as ``name``:
    approve or confirm (``yes``), or refuse. Raises as ``approve``."""
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
        StageApproval(approved=yes, name=name).model_dump(include={"approved", "name"})
        if stage_form
        else OnCallConfirmation(watching=yes, name=name).model_dump(include={"watching", "name"})
    )
    try:
        # The sync variant also where an event loop runs (a notebook, Playwright's sync API):
        # Prefect would otherwise hand back a coroutine and nothing would be answered.
        resume_flow_run(waiting.id, run_input=answer, _sync=True)  # type: ignore[call-arg]
    except FlowPauseTimeout:
        raise ConfirmationRefused(
            f"the window of {run.name} ({run_id}) has closed: it timed out"
        ) from None
    except (NotPausedError, RuntimeError) as exc:
        raise ConfirmationRefused(
            f"flow run {run.name} ({run_id}) was not resumed: {exc}"
        ) from None
    return Approval(run.name, "stage" if stage_form else "on-call")
