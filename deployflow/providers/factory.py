"""One factory: the spec names a backend, this builds it."""

from __future__ import annotations

from deployflow.providers.haproxy import HAProxyRouter
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.prometheus import PrometheusMetrics
from deployflow.spec import ServiceSpec


def build_target(spec: ServiceSpec) -> LocalProcessTarget:
    t = spec.target
    return LocalProcessTarget(
        t.command,
        state_dir=t.state_dir,
        env=t.env,
        health_path=t.health_path,
        start_timeout=t.start_timeout,
        scrape_targets_file=t.scrape_targets_file,
    )


def build_router(spec: ServiceSpec) -> HAProxyRouter:
    r = spec.router
    return HAProxyRouter(
        r.admin_socket,
        backend=r.backend,
        stable_server=r.stable_server,
        canary_server=r.canary_server,
    )


def build_metrics(spec: ServiceSpec) -> PrometheusMetrics:
    m = spec.metrics
    return PrometheusMetrics(m.url, m.queries, timeout=m.timeout)
