"""One registry: a backend kind maps to its spec model and its builder.

The spec's backend sections (``target``, ``router``, ``metrics``, ``notifications.notifiers``,
``notifications.on_call``,
``notifications.dashboards``, ``logs.source``, ``alerts``, ``dependencies``) are
discriminated unions on ``kind`` built from this table, so an unknown kind is a spec error listing
the known ones, and ``build`` dispatches on the section's model. Adding a backend is one module
(its spec model, its class with ``from_spec``), and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, Union, get_args

from pydantic import Field

from deployflow.flags.flagd_file import FlagdFileProvider, FlagdFileSpec
from deployflow.notify.slack import SlackNotifier, SlackNotifierSpec
from deployflow.providers.access_log import AccessLogMetrics, AccessLogMetricsSpec
from deployflow.providers.alertmanager import AlertmanagerAlerts, AlertmanagerSpec
from deployflow.providers.base import (
    AlertSource,
    Annotator,
    BuildContext,
    Dependency,
    FlagProvider,
    LogSource,
    Metrics,
    Notifier,
    OnCall,
    Router,
    Target,
)
from deployflow.providers.command import (
    CommandRouter,
    CommandRouterSpec,
    CommandTarget,
    CommandTargetSpec,
)
from deployflow.providers.dependencies import (
    HttpDependency,
    HttpDependencySpec,
    PrometheusDependency,
    PrometheusDependencySpec,
)
from deployflow.providers.github_actions import GitHubActionsTarget, GitHubActionsTargetSpec
from deployflow.providers.grafana import GrafanaAnnotationsSpec, GrafanaAnnotator
from deployflow.providers.haproxy import HAProxyRouter, HAProxyRouterSpec
from deployflow.providers.local_process import LocalProcessTarget, LocalProcessTargetSpec
from deployflow.providers.logs import (
    CommandLogSource,
    CommandLogSourceSpec,
    FileLogSource,
    FileLogSourceSpec,
    TargetLogSource,
    TargetLogSourceSpec,
)
from deployflow.providers.nginx import NginxRouter, NginxRouterSpec
from deployflow.providers.oncall import StaticOnCall, StaticOnCallSpec
from deployflow.providers.pagerduty import PagerDutyOnCall, PagerDutyOnCallSpec
from deployflow.providers.prometheus import PrometheusMetrics, PrometheusMetricsSpec
from deployflow.spec_types import StrictModel

Role = Literal[
    "target",
    "router",
    "metrics",
    "notifier",
    "flags",
    "on_call",
    "annotator",
    "logs",
    "alerts",
    "dependency",
]
B = TypeVar("B")
S = TypeVar("S", bound=StrictModel)


@dataclass(frozen=True)
class BackendKind:
    """One backend: the role it plays, its spec model (whose ``kind`` literal names it), and the
    function that builds it from a validated section."""

    role: Role
    spec: type[StrictModel]
    build: Callable[[Any, BuildContext], object]

    @property
    def kind(self) -> str:
        (kind,) = get_args(self.spec.model_fields["kind"].annotation)
        return str(kind)


def _without_context(build: Callable[[S], B]) -> Callable[[S, BuildContext], B]:
    """For builders that need nothing but their section."""

    def with_context(spec: S, ctx: BuildContext) -> B:
        return build(spec)

    return with_context


BACKENDS: tuple[BackendKind, ...] = (
    BackendKind("target", LocalProcessTargetSpec, _without_context(LocalProcessTarget.from_spec)),
    BackendKind("target", CommandTargetSpec, CommandTarget.from_spec),
    BackendKind("target", GitHubActionsTargetSpec, GitHubActionsTarget.from_spec),
    BackendKind("router", HAProxyRouterSpec, _without_context(HAProxyRouter.from_spec)),
    BackendKind("router", NginxRouterSpec, _without_context(NginxRouter.from_spec)),
    BackendKind("router", CommandRouterSpec, CommandRouter.from_spec),
    BackendKind("metrics", PrometheusMetricsSpec, PrometheusMetrics.from_spec),
    BackendKind("metrics", AccessLogMetricsSpec, AccessLogMetrics.from_spec),
    BackendKind("notifier", SlackNotifierSpec, SlackNotifier.from_spec),
    BackendKind("flags", FlagdFileSpec, _without_context(FlagdFileProvider.from_spec)),
    BackendKind("on_call", PagerDutyOnCallSpec, PagerDutyOnCall.from_spec),
    BackendKind("on_call", StaticOnCallSpec, _without_context(StaticOnCall.from_spec)),
    BackendKind("annotator", GrafanaAnnotationsSpec, GrafanaAnnotator.from_spec),
    BackendKind("logs", FileLogSourceSpec, _without_context(FileLogSource.from_spec)),
    BackendKind("logs", CommandLogSourceSpec, _without_context(CommandLogSource.from_spec)),
    BackendKind("logs", TargetLogSourceSpec, TargetLogSource.from_spec),
    BackendKind("alerts", AlertmanagerSpec, _without_context(AlertmanagerAlerts.from_spec)),
    BackendKind("dependency", HttpDependencySpec, _without_context(HttpDependency.from_spec)),
    BackendKind(
        "dependency", PrometheusDependencySpec, _without_context(PrometheusDependency.from_spec)
    ),
)

_CONTRACTS: dict[Role, type] = {
    "target": Target,
    "router": Router,
    "metrics": Metrics,
    "notifier": Notifier,
    "flags": FlagProvider,
    "on_call": OnCall,
    "annotator": Annotator,
    "logs": LogSource,
    "alerts": AlertSource,
    "dependency": Dependency,
}


def kinds(role: Role) -> list[BackendKind]:
    """The registered backends of one role, in registration order."""
    return [b for b in BACKENDS if b.role == role]


def spec_union(role: Role) -> Any:
    """The pydantic type of a spec section of this role: a union discriminated on ``kind``."""
    models = tuple(b.spec for b in kinds(role))
    if len(models) == 1:
        # A discriminator needs a union; a lone model still refuses other kinds by its Literal.
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007


def build(role: Role, section: StrictModel, ctx: BuildContext) -> Any:
    """Build the backend a validated spec section describes, checked against its contract.

    Raises:
        BackendConfigError: The backend cannot be built from its configuration.
        TypeError: The section's model is not registered for this role (a programming error).
    """
    for backend in kinds(role):
        if type(section) is backend.spec:
            built = backend.build(section, ctx)
            if not isinstance(built, _CONTRACTS[role]):
                raise TypeError(f"{backend.kind} built {type(built).__name__}, not a {role}")
            return built
    known = ", ".join(b.kind for b in kinds(role))
    raise TypeError(f"no {role} backend for {type(section).__name__}; known kinds: {known}")
