"""A listener that keeps what it heard, so tests assert the story a deploy told as a list of
events (``RecordingListener.told``), as httpx's tests assert requests with ``MockTransport``."""

from __future__ import annotations

from typing import TypeVar

from deployflow.story import Deploy, StoryEvent

E = TypeVar("E")


class RecordingListener:
    """Records every event, in order, with the deploy it was about."""

    def __init__(self) -> None:
        self.heard: list[tuple[StoryEvent, Deploy | None]] = []

    def describe(self) -> str:
        return "recording fake"

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        self.heard.append((event, deploy))

    @property
    def events(self) -> list[StoryEvent]:
        return [event for event, _ in self.heard]

    @property
    def told(self) -> list[str]:
        """The events by kind, e.g. ``["Started", "Announced", "StageBegan", "StageEnded",
        ...]``: the shape of the story a branch of the flow tells."""
        return [type(event).__name__ for event in self.events]

    def of(self, kind: type[E]) -> list[E]:
        """The events of one kind, in order."""
        return [event for event in self.events if isinstance(event, kind)]
