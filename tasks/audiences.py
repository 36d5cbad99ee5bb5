"""The audiences of a deploy's story that need Prefect: the run log and Prefect's event feed.

Like ``deployflow.audiences`` (the plain ones), each is a listener class and one line in
``AUDIENCES``; ``connect_backends`` puts them in front of the plain ones. Neither is a task: telling
is a side note of the flow, never a step that can fail or be retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import State, get_run_logger
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError
from prefect.states import Running

from deployflow import events
from deployflow.notify.story import log_line
from deployflow.story import (
    Announced,
    Deploy,
    Ended,
    Listener,
    RolledBack,
    StageEnded,
    Started,
    StoryEvent,
)
from tasks.events import send_events
from tasks.prefect_api import prefect_only
from tasks.run_tags import tag_outcome

_fallback = logging.getLogger("deployflow.story")


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The current flow or task run's logger; the process log outside a run (teardown)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return _fallback


def warn(message: str) -> None:
    """How the recorder reports a listener that failed: a warning in the run log."""
    run_logger().warning(message)


class RunLog:
    """Each event as one plain line in the log of the run that recorded it."""

    def describe(self) -> str:
        return "the run log"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        line = log_line(event, deploy)
        if line is not None:
            level, text = line
            run_logger().log(level, "%s", text)


class PrefectEvents:
    """The deploy's events in Prefect's feed (``deployflow.events``), for automations. A rollback
    is sent when traffic is back (``RolledBack``), and is then the deploy's ending: the ending
    the run reaches later is sent only if it says something else (the stable version failed its
    checks), so an automation on rollbacks runs once."""

    def __init__(self) -> None:
        self.strategy: str | None = None
        self.rolled_back: set[int | None] = set()  # deploys whose rollback event was sent

    def describe(self) -> str:
        return "Prefect events"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        if isinstance(event, Started):
            send_events(events.started(event.deploy))
        elif isinstance(event, Announced):
            self.strategy = event.strategy
        elif isinstance(event, StageEnded) and deploy is not None:
            promoted = events.stage_promoted(deploy, event.stage)
            if promoted is not None:
                send_events(promoted)
        elif isinstance(event, RolledBack) and event.error is None and deploy is not None:
            self.rolled_back.add(deploy.deployment_id)
            send_events(events.rolled_back(deploy, event, self.strategy))
        elif isinstance(event, Ended):
            outcome = event.outcome
            if outcome.status == "rolled_back" and outcome.deployment_id in self.rolled_back:
                return
            send_events(events.ended(outcome))


class RunState:
    """The deploy run's state in Prefect says "RolledBack" the moment traffic is back (a Running
    state of that name, its message the trigger, and the ``outcome:rolled-back`` tag), while the
    run goes on to check the stable version and gather the evidence; its final state follows
    (``flows.outcome_state``). Best effort: the run's own ending does not depend on it."""

    def describe(self) -> str:
        return "the run's state"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        if not isinstance(event, RolledBack) or deploy is None or deploy.flow_run_id is None:
            return
        if event.error is None:
            name, label = "RolledBack", "rolled-back"
            message = (
                f"rolled back to {event.restored_to}: {event.trigger.headline} (checking "
                f"{event.restored_to} and gathering the evidence)"
            )
        else:
            name, label = "RollbackFailed", "rollback-failed"
            message = event.error
        run_id = UUID(deploy.flow_run_id)
        prefect_only(
            f"mark the run {name}",
            lambda: mark_run(run_id, Running(name=name, message=message), label),
        )


def mark_run(run_id: UUID, state: State[Any], label: str) -> None:
    """Set the run's (non-final) state and its outcome tag."""
    with get_client(sync_client=True) as client:
        # Not forced: a run being cancelled stays so (Prefect refuses Cancelling -> Running).
        client.set_flow_run_state(run_id, state)
        tag_outcome(client, run_id, label)


AUDIENCES: tuple[Callable[[], Listener], ...] = (RunLog, RunState, PrefectEvents)


def prefect_audiences() -> list[Listener]:
    return [make() for make in AUDIENCES]
