"""Step 7 (and the rollback's own check): is this version healthy, are its critical paths up?

Each check returns a ``VerificationCheck``; nothing raises for an unhealthy service. A check that
cannot be evaluated (no data, metrics down) is a failure: deployflow never calls a release healthy
on missing evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from deployflow.analysis import Outcome, Thresholds, evaluate
from deployflow.providers.base import Instance, Metrics, Router, Target
from deployflow.spec import SmokeRequest


@dataclass(frozen=True)
class VerificationCheck:
    name: str
    ok: bool
    critical: bool
    detail: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VerificationReport:
    checks: tuple[VerificationCheck, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks if c.critical)

    @property
    def first_failure(self) -> VerificationCheck | None:
        return next((c for c in self.checks if c.critical and not c.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


def check_health(client: httpx.Client, url: str, *, name: str) -> VerificationCheck:
    """The health endpoint answers 2xx."""
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return VerificationCheck(name, False, True, f"no answer: {type(exc).__name__}: {exc}")
    ok = response.is_success
    return VerificationCheck(name, ok, True, f"HTTP {response.status_code}", "health")


def check_smoke(client: httpx.Client, frontend_url: str, smoke: SmokeRequest) -> VerificationCheck:
    """One smoke request through the router answers the expected status."""
    name = f"smoke: {smoke.name}"
    try:
        response = client.request(
            smoke.method, frontend_url.rstrip("/") + smoke.path, timeout=smoke.timeout
        )
    except httpx.HTTPError as exc:
        return VerificationCheck(
            name, False, smoke.critical, f"{smoke.method} {smoke.path}: no answer ({exc})",
            "critical_path",
        )  # fmt: skip
    ok = response.status_code == smoke.expect_status
    detail = f"{smoke.method} {smoke.path}: HTTP {response.status_code}"
    if not ok:
        detail += f", expected {smoke.expect_status}"
    return VerificationCheck(name, ok, smoke.critical, detail, "critical_path")


def check_metrics(
    source: Metrics,
    version: str,
    *,
    window_seconds: float,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    required: bool = True,
) -> VerificationCheck:
    """Error rate and P95 of ``version`` over the window are within the thresholds.

    A measurement that cannot be evaluated (metrics down, no data) fails the check when
    ``required``; otherwise it is reported as unavailable and does not count. A breach always
    counts.
    """
    measurement = evaluate(source.sample(version, window_seconds), baseline_p95_seconds, thresholds)
    sample = measurement.sample
    figures = (
        f"error rate {sample.error_rate if sample.error_rate is not None else 'n/a'}, "
        f"P95 {sample.p95_seconds if sample.p95_seconds is not None else 'n/a'} s, "
        f"{sample.requests if sample.requests is not None else 'n/a'} requests"
    )
    if measurement.outcome is Outcome.SUCCESSFUL:
        return VerificationCheck(f"metrics: {version}", True, True, figures, "metrics")
    if measurement.outcome is Outcome.FAILED:
        breach = measurement.breaches[0]
        return VerificationCheck(
            f"metrics: {version}", False, True, breach.reason, breach.metric, breach.value,
            breach.threshold,
        )  # fmt: skip
    if not required:
        return VerificationCheck(
            f"metrics: {version}",
            False,
            False,
            f"metrics unavailable ({measurement.outcome.value}: {measurement.note}); "
            "judged on health and smoke requests alone",
            "metrics",
        )
    return VerificationCheck(
        f"metrics: {version}",
        False,
        True,
        f"cannot be evaluated ({measurement.outcome.value}): {measurement.note}",
        "metrics",
    )


def verify_version(
    instance: Instance,
    *,
    target: Target,
    router: Router,
    metrics: Metrics,
    smoke: Sequence[SmokeRequest],
    thresholds: Thresholds,
    window_seconds: float,
    baseline_p95_seconds: float | None,
    client: httpx.Client,
    metrics_required: bool = True,
) -> VerificationReport:
    """Step 7 (and the rollback's own check): the health endpoint of ``instance``, the smoke
    requests and critical paths through the router, and the metrics of its version.

    A new version is never called healthy without its metrics (``metrics_required``). The
    version a rollback restored is judged on what is available: when metrics are down, its health
    and smoke requests decide, and the report says the metrics were unavailable.
    """
    checks = [check_health(client, target.health_url(instance), name=f"health: {instance.version}")]
    checks.extend(check_smoke(client, router.frontend_url, s) for s in smoke)
    checks.append(
        check_metrics(
            metrics,
            instance.version,
            window_seconds=window_seconds,
            baseline_p95_seconds=baseline_p95_seconds,
            thresholds=thresholds,
            required=metrics_required,
        )
    )
    return VerificationReport(tuple(checks))


def frontend_answers(client: httpx.Client, frontend_url: str) -> bool:
    """Whether anything answers at the URL users reach (any HTTP status counts)."""
    try:
        client.get(frontend_url, timeout=3.0)
    except httpx.HTTPError:
        return False
    return True
