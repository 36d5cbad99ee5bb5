"""How a deploy run ends in Prefect: a final state every state filter of the UI finds, a tag that
names the outcome, and one ERROR line for a deploy that did not succeed.

The Prefect UI filters runs by state *name*, from a fixed list (Completed, Failed, Paused...): a
run that ended in a state named RolledBack was found by no filter, and the deployment's Runs tab
(its default filter is that list minus Scheduled) hid it. So a deploy ends ``Completed`` or
``Failed``, by name as by type, and its outcome is a tag, ``outcome:rolled-back`` for example,
which the UI's tag filter finds and the run list shows; the state's message says it too.

A deploy that did not succeed is an answer, not a crash: its run log ends with one ERROR line
saying what happened. A deployment's run (a worker's or ``serve``'s process) has Prefect raise
the final state's exception and log it with its traceback; that record is dropped for a deploy's
own outcome (``ReleaseNotSucceeded``, ``SpecError``), and kept for anything else (a real bug).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from prefect import State, get_run_logger
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from deployflow.release import ReleaseNotSucceeded, ReleaseOutcome
from deployflow.spec import SpecError
from tasks.prefect_api import prefect_only
from tasks.run_tags import OUTCOME_TAG_PREFIX, tag_outcome
from tasks.run_tags import outcome_label as tag_label

# The outcomes a person filters by; a dry run is a deploy that succeeded without starting anything.
OUTCOME_LABELS = ("succeeded", "dry-run", "rolled-back", "aborted", "failed", "rollback-failed")
# The exceptions that carry a deploy's own ending, never a bug's.
EXPECTED_ENDINGS: tuple[type[BaseException], ...] = (ReleaseNotSucceeded, SpecError)
# Where Prefect's engine logs the exception a failed run's final state raises.
_ENGINE_RUN_LOGGER = "prefect.flow_runs"


def outcome_label(outcome: ReleaseOutcome) -> str:
    """The outcome in the words of its tag (one of ``OUTCOME_LABELS``)."""
    return tag_label(
        outcome.status,
        dry_run=outcome.dry_run,
        rollback_failed=outcome.rollback is not None and outcome.rollback.error is not None,
    )


def final_state(outcome: ReleaseOutcome) -> State[Any]:
    """The deploy run's final state: Completed for a release or a dry run, Failed otherwise, the
    message saying the outcome; the run is tagged ``outcome:<label>``. A deploy that did not
    succeed logs one ERROR line with its outcome."""
    label = outcome_label(outcome)
    tag_this_run(f"{OUTCOME_TAG_PREFIX}{label}")
    data = outcome.to_dict()
    if outcome.status == "succeeded":
        return Completed(message=outcome.message or f"{outcome.version} succeeded", data=data)
    message = f"{outcome.version} {outcome.status}: {outcome.message}"
    get_run_logger().error(
        "deploy of %s %s to %s %s: %s",
        outcome.service,
        outcome.version,
        outcome.environment,
        label.replace("-", " "),
        one_line(outcome.message),
    )
    quiet_expected_endings()
    return Failed(message=message, data=ReleaseNotSucceeded(data))


def refused_state(error: SpecError) -> State[Any]:
    """The final state of a deploy whose parameters or spec are invalid: nothing was started.
    One ERROR line names every field; the run is tagged ``outcome:aborted``."""
    tag_this_run(f"{OUTCOME_TAG_PREFIX}aborted")
    line = f"{error.source}: " + "; ".join(f"{path}: {problem}" for path, problem in error.problems)
    get_run_logger().error("deploy refused, nothing was started: %s", one_line(line))
    quiet_expected_endings()
    return Failed(message=f"refused, nothing was started: {one_line(line)}", data=error)


def one_line(text: str) -> str:
    return " ".join(text.split())


def tag_this_run(tag: str) -> None:
    """Tag this flow run with its outcome ``tag`` on the server, in place of an outcome tag set
    earlier; best effort (a run that cannot be tagged still ends in its state, which says the
    same)."""
    current = flow_run.get_id()
    if current is None:
        return
    run_id = UUID(str(current))

    def tag_it() -> None:
        with get_client(sync_client=True) as client:
            tag_outcome(client, run_id, tag.removeprefix(OUTCOME_TAG_PREFIX))

    try:
        prefect_only(f"tag the run {tag}", tag_it)
    except Exception as exc:
        get_run_logger().warning("could not tag the run %s (%s)", tag, type(exc).__name__)


class _DropExpectedEndings(logging.Filter):
    """Drops the engine's traceback of a deploy's own ending (already logged as one line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        raised = record.exc_info[1] if record.exc_info else None
        return not isinstance(raised, EXPECTED_ENDINGS)


_FILTER = _DropExpectedEndings()


def quiet_expected_endings() -> None:
    """Install the filter on the engine's run logger (once per process)."""
    logger = logging.getLogger(_ENGINE_RUN_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
