"""Tests look at the real backends a spec names, built through the same registry as a run."""

from __future__ import annotations

from deployflow.providers import registry
from deployflow.providers.base import BuildContext, Metrics, Router, Target
from deployflow.spec import ServiceSpec


def build_target(spec: ServiceSpec) -> Target:
    target: Target = registry.build("target", spec.target, BuildContext())
    return target


def build_router(spec: ServiceSpec) -> Router:
    router: Router = registry.build("router", spec.router, BuildContext())
    return router


def build_metrics(spec: ServiceSpec) -> Metrics:
    metrics: Metrics = registry.build("metrics", spec.metrics, BuildContext())
    return metrics
