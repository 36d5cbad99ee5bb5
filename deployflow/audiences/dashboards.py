"""The dashboard audience (Grafana annotations): a region over the deploy, a point per stage at
the time it ended, a point for a rollback or a flag kill, the outcome closing the region."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployflow.manual_rollback import ROLLBACK_STRATEGY
from deployflow.notify import story as words
from deployflow.providers.base import AnnotationResult, Annotator
from deployflow.story import (
    Announced,
    Deploy,
    Ended,
    FlagChanged,
    RollbackVerified,
    RolledBack,
    StageEnded,
    StoryEvent,
)

if TYPE_CHECKING:
    from deployflow.backends import Backends


def annotation_tags(deploy: Deploy | None) -> list[str]:
    """Dashboard annotation tags of a deploy."""
    if deploy is None:
        return ["deployflow"]
    return [
        "deployflow",
        f"service:{deploy.service}",
        f"environment:{deploy.environment}",
        f"version:{deploy.version}",
    ]


class NotAnnotated(Exception):
    """Some annotations were not written; the recorder logs it."""


class DashboardAnnotations:
    """Tells the story to the run's annotators."""

    def __init__(self, annotators: Sequence[Annotator]) -> None:
        self.annotators = tuple(annotators)

    @classmethod
    def of(cls, backends: Backends) -> DashboardAnnotations | None:
        return cls(backends.annotators) if backends.annotators else None

    def describe(self) -> str:
        return "dashboards: " + ", ".join(a.describe() for a in self.annotators)

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        tags = annotation_tags(deploy)
        problems: list[str] = []
        for annotator in self.annotators:
            try:
                results = self._annotate(annotator, event, deploy, tags)
            except Exception as exc:  # an annotator that breaks its contract stops nothing
                problems.append(f"{annotator.describe()}: {type(exc).__name__}")
                continue
            problems += [f"{r.target}: {r.error}" for r in results if not r.ok]
        if problems:
            raise NotAnnotated("; ".join(problems))

    @staticmethod
    def _annotate(
        annotator: Annotator, event: StoryEvent, deploy: Deploy | None, tags: list[str]
    ) -> list[AnnotationResult]:
        if isinstance(event, Announced) and deploy is not None:
            text = (
                f"deploy {deploy.service} {deploy.version} to {deploy.environment} "
                f"({event.strategy})"
            )
            return [annotator.start_region(text, tags)]
        if isinstance(event, StageEnded):
            at = int(event.stage.finished_at.timestamp() * 1000)
            return [annotator.point(words.stage_line(event.stage), tags, at)]
        if isinstance(event, RolledBack):
            return [annotator.point(words.rollback_line(event, deploy), tags)]
        if isinstance(event, RollbackVerified) and not event.ok:
            return [annotator.point(words.verified_line(event), tags)]
        if isinstance(event, FlagChanged) and event.percent == 0:
            return [annotator.point(words.flag_line(event), tags)]
        if isinstance(event, Ended):
            outcome = event.outcome
            verdict = words.ended_text(outcome)
            point = annotator.point(verdict, [*tags, outcome.status])
            if outcome.strategy == ROLLBACK_STRATEGY:  # a person's rollback opened no region
                return [point]
            return [point, annotator.end_region(verdict)]
        return []
