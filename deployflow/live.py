"""A spec checked against the live systems it names (``deployflow validate --live``, and every
dry run).

``validate`` proves a spec well formed; this proves it *works* here and now, before a deploy
depends on it: the target lists what runs (its status hook answering), the router answers with
its slots, the live version's health URL answers, every metrics query returns data for the live
version (a misspelt metric name fails, naming the query), each dependency is up and the alert
source answers. Nothing is started, stopped or moved.

Each backend answers for itself: a metrics backend with ``probe`` (``MetricsProbe``) checks its
queries one by one (Prometheus names a metric it has never seen); any other ``Metrics`` is asked
for one ``sample``. Routers and targets run their own ``preflight`` where they have one (nginx's
``nginx -t``). Observations only: no check raises; a check that cannot be made fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import httpx

from deployflow.providers import registry
from deployflow.providers.base import (
    AlertSource,
    BackendConfigError,
    BackendError,
    BuildContext,
    Dependency,
    Instance,
    LiveCheck,
    LiveStatus,
    Metrics,
    MetricsProbe,
    Router,
    RouterState,
    Target,
    close_backend,
    preflight_backend,
)
from deployflow.providers.slots import recording_changes
from deployflow.spec import ServiceSpec

HTTP_TIMEOUT = 5.0


@dataclass(frozen=True)
class LiveReport:
    """Every live check of one spec, in the order they ran, and the live version found."""

    checks: tuple[LiveCheck, ...]
    live_version: str | None = None

    @property
    def passed(self) -> bool:
        """True when no check failed (warnings pass)."""
        return not self.failed

    @property
    def failed(self) -> list[LiveCheck]:
        return [c for c in self.checks if c.status == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "live_version": self.live_version,
            "checks": [
                {"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks
            ],
        }

    def lines(self) -> list[str]:
        """One line per check, its status first, for people."""
        return [f"{c.status:<4} {c.name}: {c.detail}" for c in self.checks]

    def summary(self) -> str:
        """One sentence: what failed, or that everything answered."""
        if self.failed:
            shown = "; ".join(f"{c.name}: {c.detail}" for c in self.failed)
            return f"{len(self.failed)} live check(s) failed: {shown}"
        warned = sum(c.status == "warn" for c in self.checks)
        extra = f" ({warned} warning(s))" if warned else ""
        return f"all {len(self.checks)} live checks passed{extra}"


@dataclass
class LiveBackends:
    """The backends the live checks ask (a subset of a run's): built from the spec by
    ``build_live_backends``, or handed over by a run that has built them already."""

    target: Target | None
    router: Router | None
    metrics: Metrics | None
    dependencies: Sequence[Dependency] = ()
    alerts: AlertSource | None = None
    # A backend that could not be built: (spec field, why), reported as failed checks.
    unbuilt: list[tuple[str, str]] = field(default_factory=list)

    def close(self) -> None:
        for backend in (self.target, self.router, self.metrics):
            if backend is not None:
                close_backend(backend)


def build_live_backends(spec: ServiceSpec, ctx: BuildContext) -> LiveBackends:
    """The target, router, metrics, dependencies and alert source the spec names; one that
    cannot be built (a missing token, an unknown block) is recorded, not raised."""
    unbuilt: list[tuple[str, str]] = []

    def built(field_path: str, make: Callable[[], Any]) -> Any:
        try:
            return make()
        except (BackendConfigError, BackendError) as exc:
            unbuilt.append((field_path, str(exc)))
            return None

    target = built("target", lambda: registry.build("target", spec.target, ctx))
    if target is not None:
        ctx = replace(ctx, target=target)
    dependencies: list[Dependency] = []
    for i, section in enumerate(spec.dependencies):
        dependency = built(
            f"dependencies[{i}]", partial(registry.build, "dependency", section, ctx)
        )
        if dependency is not None:
            dependencies.append(dependency)
    alerts_section = spec.alerts
    alerts = None
    if alerts_section is not None:
        alerts = built("alerts", partial(registry.build, "alerts", alerts_section, ctx))
    router = built("router", lambda: registry.build("router", spec.router, ctx))
    metrics = built("metrics", lambda: registry.build("metrics", spec.metrics, ctx))
    if router is not None:
        # Metrics read through the router's slots or addresses (the access log) learn here
        # which version the live one is, as a deploy's first look at the router teaches them.
        router = recording_changes(router, metrics, target)
    return LiveBackends(
        target=target,
        router=router,
        metrics=metrics,
        dependencies=dependencies,
        alerts=alerts,
        unbuilt=unbuilt,
    )


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:400]


def check_target(target: Target) -> tuple[LiveCheck, list[Instance]]:
    """The target's own preflight, then what it lists as running (a command target's status
    hook, the local process records, the GitHub deployments)."""
    try:
        preflight_backend(target)
        instances = target.instances()
    except Exception as exc:  # a hook may fail in any way: it is an answer here
        return LiveCheck("target", "fail", f"{target.describe()}: {_why(exc)}"), []
    running = ", ".join(f"{i.version} at {i.address}" for i in instances) or "nothing running"
    return LiveCheck("target", "ok", f"{target.describe()} lists {running}"), instances


def check_router(router: Router) -> tuple[LiveCheck, RouterState | None]:
    """The router's own preflight, then its state (HAProxy: the backend and both slots)."""
    try:
        preflight_backend(router)
        state = router.state()
    except Exception as exc:
        return LiveCheck("router", "fail", f"{router.describe()}: {_why(exc)}"), None
    return LiveCheck("router", "ok", f"{router.describe()}: {state}"), state


def find_live(
    state: RouterState, instances: Sequence[Instance]
) -> tuple[list[LiveCheck], Instance | None]:
    """The version the stable slot serves, matched with what the target lists (pure)."""
    checks: list[LiveCheck] = []
    if state.canary is not None and state.canary_weight > 0:
        checks.append(
            LiveCheck(
                "router.canary",
                "warn",
                f"the canary slot takes {state.canary_weight}% ({state.canary}): a deploy runs, "
                "or one was interrupted (the next deploy reconciles it)",
            )
        )
    if state.stable is None:
        checks.append(
            LiveCheck(
                "live version",
                "warn",
                "the stable slot serves nothing: the next deploy is a first release, and the "
                "metrics queries cannot be tried on a live version",
            )
        )
        return checks, None
    live = next((i for i in instances if i.address == state.stable), None)
    if live is None:
        listed = ", ".join(f"{i.version} at {i.address}" for i in instances) or "nothing"
        checks.append(
            LiveCheck(
                "live version",
                "fail",
                f"the stable slot points at {state.stable}, which the target does not list "
                f"(it lists {listed}): a deploy could not tell which version is live",
            )
        )
        return checks, None
    checks.append(LiveCheck("live version", "ok", f"{live.version} at {live.address}"))
    return checks, live


def check_health(target: Target, live: Instance, http: httpx.Client) -> LiveCheck:
    url = target.health_url(live)
    try:
        response = http.get(url)
    except httpx.HTTPError as exc:
        return LiveCheck("health", "fail", f"{url}: no answer ({type(exc).__name__})")
    status: LiveStatus = "ok" if response.is_success else "fail"
    return LiveCheck("health", status, f"{url}: HTTP {response.status_code}")


def check_frontend(router: Router, http: httpx.Client) -> LiveCheck:
    """The URL users reach answers at all (any status: its root may well be a 404)."""
    url = router.frontend_url
    try:
        response = http.get(url)
    except httpx.HTTPError as exc:
        return LiveCheck("router.frontend_url", "fail", f"{url}: no answer ({type(exc).__name__})")
    status: LiveStatus = "warn" if response.status_code >= 500 else "ok"
    return LiveCheck("router.frontend_url", status, f"{url}: HTTP {response.status_code}")


def check_metrics(metrics: Metrics, version: str, window_seconds: float) -> list[LiveCheck]:
    """Each query for the live version (``MetricsProbe``), else one sample: no data fails."""
    try:
        if isinstance(metrics, MetricsProbe):
            return metrics.probe(version, window_seconds)
        sample = metrics.sample(version, window_seconds)
    except Exception as exc:  # an observation must not raise; if it does, it is a failure
        return [LiveCheck("metrics", "fail", f"{metrics.describe()}: {_why(exc)}")]
    if sample.error is not None:
        return [LiveCheck("metrics", "fail", f"{metrics.describe()}: {sample.error}")]
    if sample.requests is None or sample.error_rate is None or sample.p95_seconds is None:
        missing = [
            name
            for name, value in (
                ("requests", sample.requests),
                ("error rate", sample.error_rate),
                ("P95", sample.p95_seconds),
            )
            if value is None
        ]
        return [
            LiveCheck(
                "metrics",
                "fail",
                f"{metrics.describe()}: no data for {version} ({', '.join(missing)})",
            )
        ]
    return [
        LiveCheck(
            "metrics",
            "ok",
            f"{metrics.describe()}: {sample.requests:g} requests, error rate "
            f"{sample.error_rate:g}, P95 {sample.p95_seconds:g}s for {version}",
        )
    ]


def check_dependency(dependency: Dependency) -> LiveCheck:
    try:
        status = dependency.check()
    except Exception as exc:
        return LiveCheck(f"dependencies.{dependency.name}", "fail", _why(exc))
    return LiveCheck(
        f"dependencies.{status.name}", "ok" if status.ok else "fail", status.detail or "down"
    )


def check_alerts(alerts: AlertSource) -> LiveCheck:
    read = alerts.firing()
    if read.error is not None:
        return LiveCheck("alerts", "fail", read.error)
    if read.alerts:
        shown = "; ".join(str(a) for a in read.alerts[:5])
        return LiveCheck(
            "alerts", "warn", f"firing now (a deploy would not start into them): {shown}"
        )
    return LiveCheck("alerts", "ok", f"{alerts.describe()}: nothing firing")


def check_live(
    backends: LiveBackends, window_seconds: float, http: httpx.Client | None = None
) -> LiveReport:
    """Every live check through ``backends``; the metrics queries are tried over
    ``window_seconds`` (a spec's ``analysis.baseline_window``: the range the pre-deploy baseline
    needs data over). ``http`` asks the health and frontend URLs (a client is made when None)."""
    owned = http is None
    client = http or httpx.Client(timeout=HTTP_TIMEOUT)
    checks = [LiveCheck(name, "fail", f"cannot be built: {why}") for name, why in backends.unbuilt]
    live: Instance | None = None
    try:
        instances: list[Instance] = []
        target_answered = False
        if backends.target is not None:
            target_check, instances = check_target(backends.target)
            checks.append(target_check)
            target_answered = target_check.status == "ok"
        state = None
        if backends.router is not None:
            router_check, state = check_router(backends.router)
            checks.append(router_check)
            checks.append(check_frontend(backends.router, client))
        if state is not None and backends.target is not None and target_answered:
            found, live = find_live(state, instances)
            checks += found
            if live is not None:
                checks.append(check_health(backends.target, live, client))
        if backends.metrics is not None:
            if live is not None:
                checks += check_metrics(backends.metrics, live.version, window_seconds)
            else:
                checks.append(
                    LiveCheck(
                        "metrics",
                        "warn",
                        "not tried: no live version to query (see the checks above)",
                    )
                )
        checks += [check_dependency(d) for d in backends.dependencies]
        if backends.alerts is not None:
            checks.append(check_alerts(backends.alerts))
    finally:
        if owned:
            client.close()
    return LiveReport(tuple(checks), live.version if live else None)


def check_spec_live(spec: ServiceSpec, ctx: BuildContext) -> LiveReport:
    """Build the backends ``spec`` names and check them live; they are closed after."""
    backends = build_live_backends(spec, ctx)
    try:
        return check_live(backends, spec.analysis.baseline_window)
    finally:
        backends.close()
