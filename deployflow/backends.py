"""The collaborators of one run, built once from the spec (and saved blocks) by ``connect``.

The flow hands each task the one collaborator it needs. Subflows receive the whole bundle, and
Prefect records a subflow's parameters on the server: ``Backends`` therefore serialises to what
each backend *is* (``describe()``), never to its attributes, so no token or password can leak into
the API, the UI or a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from deployflow.providers import registry
from deployflow.providers.base import (
    Annotator,
    BuildContext,
    Dependency,
    FlagProvider,
    Metrics,
    Notifier,
    OnCall,
    Router,
    Target,
    close_backend,
)
from deployflow.providers.slots import recording_changes
from deployflow.signals import AlertWatch, LogWatch
from deployflow.spec import ServiceSpec
from deployflow.story import Listener, Recorder
from deployflow.tracking.ledger import Ledger

logger = logging.getLogger(__name__)


class Backends(BaseModel):
    """Target, router, metrics, notifiers, on-call source and tracking ledger of one run."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    target: Target
    router: Router
    metrics: Metrics
    notifiers: tuple[Notifier, ...] = ()
    ledger: Ledger
    # Who is on call (notifications.on_call); None when the spec names nobody.
    on_call: OnCall | None = None
    # Dashboards that mark the deploy (notifications.dashboards).
    annotators: tuple[Annotator, ...] = ()
    # Health and smoke requests go through this transport; None is the network. Tests pass
    # ``FakeService.transport`` (as httpx's own tests pass ``MockTransport``).
    http_transport: httpx.BaseTransport | None = None
    # The spec's flags.provider; None when the spec releases no feature flags.
    flags: FlagProvider | None = None
    # The spec's logs, alerts and dependencies sections (None / empty when it has none).
    logs: LogWatch | None = None
    alerts: AlertWatch | None = None
    dependencies: tuple[Dependency, ...] = ()
    # Who hears the deploy's story (``deployflow.story``). Left out, the plain audiences of
    # ``deployflow.audiences`` are built from these backends (the chat threads, the dashboards).
    story: Recorder = Field(default_factory=Recorder)

    @model_validator(mode="after")
    def _tell_the_audiences(self) -> Backends:
        if "story" not in self.model_fields_set:
            object.__setattr__(self, "story", Recorder(plain_audiences(self)))
        return self

    def telling(self, extra: list[Listener]) -> Backends:
        """These backends with ``extra`` listeners hearing the story first (the run log...)."""
        return self.model_copy(update={"story": self.story.with_listeners(extra)})

    @model_serializer
    def _describe(self) -> dict[str, Any]:
        return {
            "target": self.target.describe(),
            "router": self.router.describe(),
            "metrics": self.metrics.describe(),
            "notifiers": [n.describe() for n in self.notifiers],
            "ledger": self.ledger.describe(),
            "flags": self.flags.describe() if self.flags else None,
            "on_call": self.on_call.describe() if self.on_call is not None else None,
            "annotators": [a.describe() for a in self.annotators],
            "logs": self.logs.describe() if self.logs is not None else None,
            "alerts": self.alerts.describe() if self.alerts is not None else None,
            "dependencies": [d.describe() for d in self.dependencies],
            "story": self.story.describe(),
        }

    def close(self) -> None:
        """Release what the backends hold (the github-actions target's HTTP clients, for
        example); backends without ``close`` hold nothing. The ledger outlives the run: its
        engine is shared by the process. Every backend is closed even if one fails."""
        backends: list[object] = [self.target, self.router, self.metrics, *self.notifiers]
        backends += [self.flags, self.on_call, *self.annotators]
        for backend in backends:
            if backend is None:
                continue
            try:
                close_backend(backend)
            except Exception:  # cleanup: the run's outcome is already decided
                logger.exception("closing %s failed", type(backend).__name__)


def plain_audiences(backends: Backends) -> list[Listener]:
    from deployflow.audiences import audiences  # they build on Backends

    return audiences(backends)


def _audiences(
    role: Literal["notifier", "annotator"],
    sections: Sequence[Any],
    ctx: BuildContext,
    warn: Callable[[str], None] | None,
) -> tuple[Any, ...]:
    """The notifiers (or dashboards) that can be built; one that cannot (a missing Slack token,
    an unknown block) is told to ``warn`` and left out: telling people never blocks a deploy."""
    built = []
    for index, section in enumerate(sections):
        try:
            built.append(registry.build(role, section, ctx))
        except Exception as exc:
            kind = getattr(section, "kind", role)
            message = f"{role} {index + 1} ({kind}) left out, the deploy goes on without it: {exc}"
            if warn is not None:
                warn(message)
            else:
                logger.warning(message)
    return tuple(built)


def connect(
    spec: ServiceSpec,
    ledger: Ledger,
    ctx: BuildContext,
    warn: Callable[[str], None] | None = None,
) -> Backends:
    """Build every backend the spec names, through the registry.

    ``warn`` reports an audience that failed to hear the story (the run log's warning).

    Raises:
        BackendConfigError: A backend cannot be built (a missing token, an unknown block); the
            message names the spec field.
    """
    if not ctx.service:
        ctx = replace(ctx, service=spec.service)
    target: Target = registry.build("target", spec.target, ctx)
    ctx = replace(ctx, target=target)
    metrics: Metrics = registry.build("metrics", spec.metrics, ctx)
    router: Router = registry.build("router", spec.router, ctx)
    # Metrics that name versions through the router's slots or addresses read, in their slot
    # history, every change the run makes to the router.
    router = recording_changes(router, metrics, target)
    logs = None
    if spec.logs is not None:
        logs = LogWatch(registry.build("logs", spec.logs.source, ctx), spec.logs)
    backends = Backends(
        target=target,
        router=router,
        metrics=metrics,
        notifiers=_audiences("notifier", spec.notifications.notifiers, ctx, warn),
        ledger=ledger,
        flags=registry.build("flags", spec.flags.provider, ctx) if spec.flags else None,
        annotators=_audiences("annotator", spec.notifications.dashboards, ctx, warn),
        on_call=(
            registry.build("on_call", spec.notifications.on_call, ctx)
            if spec.notifications.on_call is not None
            else None
        ),
        logs=logs,
        alerts=AlertWatch(registry.build("alerts", spec.alerts, ctx)) if spec.alerts else None,
        dependencies=tuple(registry.build("dependency", d, ctx) for d in spec.dependencies),
    )
    story = Recorder(plain_audiences(backends), warn)
    return backends.model_copy(update={"story": story})
