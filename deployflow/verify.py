"""Step 7 (and the rollback's own check): is this version healthy, are its critical paths up?

Each check returns a ``VerificationCheck``; nothing raises for an unhealthy service. A breach (an
error rate or P95 beyond its limit beyond doubt, a health endpoint or critical path down) fails
the check. Metrics that show no breach but cannot tell the version healthy beyond doubt either
pass: the stages before judged it, and doubt is not harm. Metrics that cannot be read fail the
check only where they are ``required`` (nothing else judged the version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from deployflow.analysis import Outcome, Thresholds, evaluate
from deployflow.error_words import in_words
from deployflow.figures import duration, measured, percent, probability
from deployflow.providers.base import AlertSource, Dependency, Instance, Metrics, Router, Target
from deployflow.spec import SmokeRequest
from deployflow.stats import binomial_tail


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
        return VerificationCheck(name, False, True, f"no answer: {in_words(exc)}")
    ok = response.is_success
    return VerificationCheck(name, ok, True, f"HTTP {response.status_code}", "health")


def check_smoke(
    client: httpx.Client,
    frontend_url: str,
    smoke: SmokeRequest,
    *,
    expected_error_rate: float = 0.0,
    confidence: float = 0.999,
) -> VerificationCheck:
    """``smoke.attempts`` requests through the router answer the expected status, but for the
    failures the stable version's own error rate explains.

    The path fails when the chance of this many failures or more, were each request to fail at
    ``expected_error_rate``, is below ``1 - confidence``. With an expected rate of 0 (unknown, or
    a stable version without errors) any failure fails the path.
    """
    name = f"smoke: {smoke.name}"
    url = frontend_url.rstrip("/") + smoke.path
    failures: list[str] = []
    for _ in range(smoke.attempts):
        try:
            response = client.request(smoke.method, url, timeout=smoke.timeout)
        except httpx.HTTPError as exc:
            failures.append(f"no answer ({in_words(exc)})")
            continue
        if response.status_code != smoke.expect_status:
            failures.append(f"HTTP {response.status_code}")
    what = f"{smoke.method} {smoke.path}"
    if not failures:
        return VerificationCheck(
            name, True, smoke.critical,
            f"{what}: HTTP {smoke.expect_status} to all {smoke.attempts} requests", "critical_path",
        )  # fmt: skip
    chance = binomial_tail(len(failures), smoke.attempts, expected_error_rate)
    seen = ", ".join(sorted(set(failures)))
    detail = (
        f"{what}: {len(failures)} of {smoke.attempts} requests failed ({seen}, "
        f"expected {smoke.expect_status}); chance at stable's error rate "
        f"{percent(expected_error_rate)}: {probability(chance)}"
    )
    ok = chance >= 1.0 - confidence
    detail += ": within chance" if ok else ": beyond chance"
    return VerificationCheck(name, ok, smoke.critical, detail, "critical_path")


def check_metrics(
    source: Metrics,
    version: str,
    *,
    window_seconds: float,
    baseline_p95_seconds: float | None,
    thresholds: Thresholds,
    required: bool = True,
    evidence_seconds: float | None = None,
    stable_p95_seconds: float | None = None,
) -> VerificationCheck:
    """Error rate and P95 of ``version`` over the window are within the thresholds.

    ``stable_p95_seconds``: stable's P95 when it last served beside the canary; the P95 is held
    against it instead of the pre-deploy baseline when it is higher (``evaluate``).

    ``evidence_seconds``, when longer than the window, is how long the version has served the
    traffic its promotion was judged on (since its last stage began): the check is then judged
    over all of it, so a version whose error rate the last stage showed below the maximum over
    its requests is not failed on the fewer requests of one short window, and over the recent
    window alone, which only ever fails it (a fault since then shows there undiluted); the two
    share the confidence budget.

    A breach fails the check. Figures within the limits that are not beyond doubt pass it, the
    report saying so. A measurement that cannot be evaluated (metrics down, no data) fails the
    check when ``required``; otherwise it is reported as unavailable and does not count.
    """
    scope = ""  # which window decided, when it was the recent one
    if evidence_seconds is not None and evidence_seconds > window_seconds + 1e-9:
        measurement = evaluate(
            source.sample(version, evidence_seconds), baseline_p95_seconds, thresholds, looks=2,
            stable_p95_seconds=stable_p95_seconds,
        )  # fmt: skip
        recent = evaluate(
            source.sample(version, window_seconds), baseline_p95_seconds, thresholds, looks=2,
            stable_p95_seconds=stable_p95_seconds,
        )  # fmt: skip
        if recent.outcome is Outcome.FAILED and measurement.outcome is not Outcome.FAILED:
            measurement, scope = recent, f"over the last {duration(window_seconds)}: "
    else:
        measurement = evaluate(
            source.sample(version, window_seconds), baseline_p95_seconds, thresholds,
            stable_p95_seconds=stable_p95_seconds,
        )  # fmt: skip
    sample = measurement.sample
    figures = measured(sample.error_rate, sample.p95_seconds, sample.requests, precise=True)
    if measurement.outcome is Outcome.SUCCESSFUL:
        return VerificationCheck(f"metrics: {version}", True, True, figures, "metrics")
    if measurement.outcome is Outcome.FAILED:
        breach = measurement.breaches[0]
        return VerificationCheck(
            f"metrics: {version}", False, True, scope + breach.reason, breach.metric, breach.value,
            breach.threshold,
        )  # fmt: skip
    if (
        measurement.outcome is Outcome.INCONCLUSIVE
        and measurement.note
        and sample.error_rate is not None
    ):
        return VerificationCheck(
            f"metrics: {version}",
            True,
            True,
            f"no breach, not beyond doubt either: {measurement.note}",
            "metrics",
        )
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


def check_dependency(dependency: Dependency) -> VerificationCheck:
    """A service this one depends on is up (it names the one that is down)."""
    status = dependency.check()
    return VerificationCheck(
        f"dependency: {status.name}", status.ok, True, status.detail, "dependency"
    )


def check_alerts(alerts: AlertSource) -> VerificationCheck:
    """No alert matching the spec's matchers fires; an Alertmanager that cannot be asked fails
    the check (a release is never called healthy on missing evidence)."""
    read = alerts.firing()
    if read.error is not None:
        return VerificationCheck(
            "alerts", False, True, f"cannot be evaluated: {read.error}", "alerts"
        )
    if read.alerts:
        shown = "; ".join(str(a) for a in read.alerts[:5])
        return VerificationCheck(
            "alerts", False, True, f"firing: {shown}", "alerts", float(len(read.alerts)), 0.0
        )
    return VerificationCheck("alerts", True, True, f"none firing ({alerts.describe()})", "alerts")


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
    expected_error_rate: float = 0.0,
    dependencies: Sequence[Dependency] = (),
    alerts: AlertSource | None = None,
    evidence_seconds: float | None = None,
    stable_p95_seconds: float | None = None,
) -> VerificationReport:
    """Step 7 (and the rollback's own check): the health endpoint of ``instance``, the smoke
    requests and critical paths through the router, and the metrics of its version.

    Smoke requests fail only beyond the failures ``expected_error_rate`` (the stable version's
    error rate, at most) explains. A new version is never called healthy without its metrics
    (``metrics_required``). The
    version a rollback restored is judged on what is available: when metrics are down, its health
    and smoke requests decide, and the report says the metrics were unavailable.

    Each of ``dependencies`` must be up, and no alert of ``alerts`` may fire (the rollback's check
    leaves the alerts out: those the canary set off take a while to resolve).
    ``evidence_seconds``: how long the version has served its promoted share (``check_metrics``).
    """
    checks = [check_health(client, target.health_url(instance), name=f"health: {instance.version}")]
    checks.extend(
        check_smoke(
            client,
            router.frontend_url,
            s,
            expected_error_rate=expected_error_rate,
            confidence=thresholds.confidence,
        )
        for s in smoke
    )
    checks.append(
        check_metrics(
            metrics,
            instance.version,
            window_seconds=window_seconds,
            baseline_p95_seconds=baseline_p95_seconds,
            thresholds=thresholds,
            required=metrics_required,
            evidence_seconds=evidence_seconds,
            stable_p95_seconds=stable_p95_seconds,
        )
    )
    checks.extend(check_dependency(d) for d in dependencies)
    if alerts is not None:
        checks.append(check_alerts(alerts))
    return VerificationReport(tuple(checks))


def frontend_answers(client: httpx.Client, frontend_url: str) -> bool:
    """Whether anything answers at the URL users reach (any HTTP status counts)."""
    try:
        client.get(frontend_url, timeout=3.0)
    except httpx.HTTPError:
        return False
    return True
