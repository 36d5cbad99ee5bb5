"""The audiences of a deploy's story that need nothing but the run's backends: each is one module
with a listener class, and one line here. ``tasks.audiences`` adds those that need Prefect (the run
log, the event feed); ``deployflow.fakes.story.RecordingListener`` records events for tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from deployflow.audiences.dashboards import DashboardAnnotations
from deployflow.audiences.threads import ChatThreads
from deployflow.story import Listener

if TYPE_CHECKING:
    from deployflow.backends import Backends

# Each builds its listener from the run's backends, or returns None when the run has no such
# audience (no notifier, no dashboard).
AUDIENCES: tuple[Callable[[Backends], Listener | None], ...] = (
    ChatThreads.of,
    DashboardAnnotations.of,
)


def audiences(backends: Backends) -> list[Listener]:
    """The listeners ``AUDIENCES`` build for this run, in order."""
    built = (make(backends) for make in AUDIENCES)
    return [listener for listener in built if listener is not None]
