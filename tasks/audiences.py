"""The audiences of a deploy's story that need Prefect: the run log and Prefect's event feed.

Like ``deployflow.audiences`` (the plain ones), each is a listener class and one line in
``AUDIENCES``; ``connect_backends`` puts them in front of the plain ones. Neither is a task: telling
is a side note of the flow, never a step that can fail or be retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from deployflow import events
from deployflow.notify.story import log_line
from deployflow.story import Deploy, Ended, Listener, StageEnded, Started, StoryEvent
from tasks.events import send_events

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
    """The deploy's events in Prefect's feed (``deployflow.events``), for automations."""

    def describe(self) -> str:
        return "Prefect events"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        if isinstance(event, Started):
            send_events(events.started(event.deploy))
        elif isinstance(event, StageEnded) and deploy is not None:
            promoted = events.stage_promoted(deploy, event.stage)
            if promoted is not None:
                send_events(promoted)
        elif isinstance(event, Ended):
            send_events(events.ended(event.outcome))


AUDIENCES: tuple[Callable[[], Listener], ...] = (RunLog, PrefectEvents)


def prefect_audiences() -> list[Listener]:
    return [make() for make in AUDIENCES]
