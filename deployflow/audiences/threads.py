"""The chat audience: one thread per deploy (Slack). The announcement is the parent message, each
stage, gate and flag kill a reply, and a rollback or the outcome rewrites the parent. A notifier
without threads gets the announcement and rollback notices as messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from deployflow.notify import story as words
from deployflow.providers.base import NotificationResult, Notifier, ThreadedNotifier
from deployflow.story import (
    Announced,
    Answered,
    Deploy,
    Ended,
    FlagChanged,
    Paused,
    RollbackVerified,
    RolledBack,
    SchemaSettled,
    StageEnded,
    StoryEvent,
)

if TYPE_CHECKING:
    from deployflow.backends import Backends


class NotDelivered(Exception):
    """Some messages were not delivered (the others were); the recorder logs it."""


class ChatThreads:
    """Tells the story to the run's notifiers."""

    def __init__(self, notifiers: Sequence[Notifier]) -> None:
        self.notifiers = tuple(notifiers)
        # The parent message each notifier posted, in the order of ``notifiers``.
        self.parents: list[NotificationResult] = []

    @classmethod
    def of(cls, backends: Backends) -> ChatThreads | None:
        return cls(backends.notifiers) if backends.notifiers else None

    def describe(self) -> str:
        return "chat: " + ", ".join(n.describe() for n in self.notifiers)

    def hear(self, event: StoryEvent, deploy: Deploy | None) -> None:
        if isinstance(event, Announced) and deploy is not None:
            self._announce(event, deploy)
        elif isinstance(event, StageEnded):
            self._in_threads([words.stage_line(event.stage)])
        elif isinstance(event, Paused):
            self._in_threads([words.paused_line(event)])
        elif isinstance(event, Answered):
            self._in_threads([words.answered_line(event)])
        elif isinstance(event, FlagChanged) and event.percent == 0:
            self._notice(words.flag_line(event), conclude=False)
        elif isinstance(event, RolledBack):
            text = words.rollback_line(event, deploy)
            if not self._threads() and deploy is not None and deploy.deployment_id is not None:
                # No thread will carry the outcome (a person's rollback, a notifier without
                # threads): the notice itself says where the report is read.
                text += f"\n> Incident report: `deployflow report {deploy.deployment_id}`"
            self._notice(text, conclude=True)
        elif isinstance(event, RollbackVerified):
            self._notice(words.verified_line(event), conclude=False)
        elif isinstance(event, SchemaSettled):
            self._notice(words.schema_line(event), conclude=False)
        elif isinstance(event, Ended):
            line = words.outcome_line(event.outcome)
            if event.dashboard_url is not None:
                line += f"\n<{event.dashboard_url}|Dashboard of the deploy>"
            report = words.report_pointer(event.outcome)
            if report is not None:
                line += f"\n{report}"
            self._in_threads([line], conclude=line)

    def _announce(self, event: Announced, deploy: Deploy) -> None:
        card = words.card(event, deploy)
        results: list[NotificationResult] = []
        for notifier in self.notifiers:
            try:
                if isinstance(notifier, ThreadedNotifier):
                    result = notifier.announce(card)
                else:
                    result = notifier.post(card.text)
            except Exception as exc:  # a notifier that breaks its contract stops nothing
                result = NotificationResult(False, notifier.describe(), type(exc).__name__)
            results.append(result)
        self.parents = results
        self._raise_failed(results)

    def _threads(self) -> list[tuple[ThreadedNotifier, NotificationResult]]:
        return [
            (n, p)
            for n, p in zip(self.notifiers, self.parents, strict=False)
            if isinstance(n, ThreadedNotifier) and p.ok
        ]

    def _in_threads(self, replies: Sequence[str], conclude: str | None = None) -> None:
        results: list[NotificationResult] = []
        for notifier, parent in self._threads():
            try:
                results += [notifier.reply(parent, text) for text in replies]
                if conclude is not None:
                    results.append(notifier.conclude(parent, conclude))
            except Exception as exc:
                results.append(NotificationResult(False, notifier.describe(), type(exc).__name__))
        self._raise_failed(results)

    def _notice(self, text: str, *, conclude: bool) -> None:
        """In each thread (rewriting the parent when ``conclude``); as a message to the notifiers
        without a thread (all of them when no thread was started)."""
        threaded = self._threads()
        in_thread = {id(n) for n, _ in threaded}
        results: list[NotificationResult] = []
        failed: Exception | None = None
        try:
            self._in_threads([text], conclude=text if conclude else None)
        except NotDelivered as exc:
            failed = exc
        for notifier in self.notifiers:
            if id(notifier) in in_thread:
                continue
            try:
                results.append(notifier.post(text))
            except Exception as exc:
                results.append(NotificationResult(False, notifier.describe(), type(exc).__name__))
        self._raise_failed(results)
        if failed is not None:
            raise failed

    @staticmethod
    def _raise_failed(results: Sequence[NotificationResult]) -> None:
        failed = [f"{r.channel}: {r.detail}" for r in results if not r.ok]
        if failed:
            raise NotDelivered("; ".join(failed))
