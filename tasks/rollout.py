"""Step 6: move traffic and observe each stage."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import replace

import httpx
from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.analysis import Breach, Measurement
from deployflow.error_words import in_words
from deployflow.figures import measured
from deployflow.manual_rollback import MANUAL_METRIC, asked_by_a_person
from deployflow.probe import ProbeTraffic
from deployflow.providers.base import BackendError, Instance, Metrics, Router, Target
from deployflow.rollout import StageResult, observe_stage, plan_evidence, thresholds_from
from deployflow.signals import AlertWatch, LogWatch
from deployflow.spec import AnalysisSpec, SmokeRequest
from deployflow.tracking.answers import silence_grace, tracking_silence_reason
from deployflow.tracking.lease import lease_seconds
from deployflow.tracking.ledger import Ledger
from tasks.retry_policy import QUICK_CALL, no_retries, observation_timeout, retried

# How often a stage reads the tracking database for a person's request to roll back (seconds).
ROLLBACK_REQUEST_PERIOD = 1.0


@task(name="set-traffic", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def set_traffic(
    router: Router,
    ledger: Ledger,
    deployment_id: int,
    stable: Instance | None,
    canary: Instance,
    weight: int,
    stage: int,
) -> None:
    """Send ``weight`` percent of traffic to the canary; the rest stays on stable.

    The stage and weight are written to the tracking database before the router changes, so a
    restarted run knows where traffic may be.
    """
    ledger.traffic_moving(deployment_id, stage=stage, weight=weight)
    if stable is None:
        router.promote(canary)  # a first release: nothing else to split with
    else:
        router.set_split(stable, canary, weight)
    state = router.state()
    get_run_logger().info("traffic: %s%% on %s; router now: %s", weight, canary.version, state)


@task(name="promote", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def promote(router: Router, ledger: Ledger, deployment_id: int, canary: Instance) -> None:
    """The canary becomes the stable server with all the traffic."""
    ledger.traffic_moving(deployment_id, stage=None, weight=100)
    router.promote(canary)
    get_run_logger().info("promoted %s to stable", canary.version)


@task(
    name="observe-stage",
    cache_policy=NO_CACHE,
    task_run_name="observe {weight}% on {version}",
    # Never retried: a repeat would observe the stage again from the start and record it twice;
    # a failed metric query is already a measurement (Error) the analysis judges.
    **no_retries(),
)
def observe_canary_stage(
    metrics: Metrics,
    target: Target,
    router: Router,
    ledger: Ledger,
    deployment_id: int,
    *,
    version: str,
    index: int,
    weight: int,
    observe_seconds: float,
    analysis: AnalysisSpec,
    baseline_p95_seconds: float | None,
    control_version: str | None = None,
    logs: LogWatch | None = None,
    alerts: AlertWatch | None = None,
    exposure: float = 1.0,
    probe: Sequence[SmokeRequest] = (),
    transport: httpx.BaseTransport | None = None,
    stable_p95_seconds: float | None = None,
) -> StageResult:
    """Measure the canary every interval, against ``control_version`` (the stable version) over
    the same window, until the stage promotes, rolls back or (``on_inconclusive: pause``) asks a
    person; a canary the target no longer runs, or whose router slot is down (its health check
    failing), fails the stage at once. ``logs`` and ``alerts`` (the spec's sections) are judged
    at every look beside the metrics. ``exposure``: the share of traffic (0..1] the canary gets
    if the stage promotes, which sets the confidence the promotion needs. With
    ``analysis.probe_rate``, the ``probe`` requests (the spec's smoke requests) are sent straight
    to the canary meanwhile, and the stage says how many. ``stable_p95_seconds``: stable's P95
    when it last served beside the canary (``stable_p95_beside``), for a stage where it has no
    traffic."""
    logger = get_run_logger()
    # Bound now, as the stage begins: the logs are read from here on.
    signals = [watch.probe(version) for watch in (logs, alerts) if watch is not None]

    asked_at = [float("-inf")]

    def rollback_asked() -> str | None:
        """A person's rollback started while this deploy runs asks it to roll back here, at the
        next look, instead of racing it for the router (``deployflow rollback``). Read at most
        once a second: a look every few milliseconds (tests) must not wait on the database."""
        now = time.monotonic()
        if now - asked_at[0] < ROLLBACK_REQUEST_PERIOD:
            return None
        asked_at[0] = now
        return asked_by_a_person(ledger, deployment_id)

    def gone() -> str | Breach | None:
        asked = rollback_asked()
        if asked is not None:  # a person's, not the canary's: named so in every record
            return Breach(MANUAL_METRIC, None, None, asked)
        silent = ledger.stopped_answering(silence_grace(lease_seconds()))
        if silent is not None:
            # It can neither renew its lease nor record the stage: put traffic back while the
            # lease still holds (deployflow.fencing), rather than run on unrecorded.
            return Breach("tracking_database", None, None, tracking_silence_reason(silent))
        instance = next((i for i in target.instances() if i.version == version), None)
        if instance is None:
            return f"{version} is no longer running ({target.describe()})"
        try:
            state = router.state()
        except BackendError as exc:
            # A router that does not answer is a failed look at once, not "no requests" held
            # look after look: users may reach nothing, and people must hear it now.
            return (
                f"the router does not answer ({in_words(exc)}): users may be reaching no "
                f"version of the service, and {version}'s share cannot be known"
            )
        # A version promoted to the stable slot (flags rolled out after promotion) has traffic.
        if weight > 0 and state.canary is None and state.stable != instance.address:
            return (
                f"{router.describe()} sends {version} no traffic: its server is down "
                "(the router took it out: failing its health check, or request after request)"
            )
        return None

    def log(m: Measurement) -> None:
        s = m.sample
        logger.info(
            "stage %d (%d%%): %s; %s%s",
            index + 1,
            weight,
            m.outcome.value,
            measured(s.error_rate, s.p95_seconds, s.requests),
            f" ({m.note})" if m.note else "",
        )

    instance = next((i for i in target.instances() if i.version == version), None)
    traffic: ProbeTraffic | None = None
    if analysis.probe_rate > 0 and probe and instance is not None:
        traffic = ProbeTraffic(
            f"http://{instance.address}", probe, rate=analysis.probe_rate, transport=transport
        )
    with traffic if traffic is not None else nullcontext():
        result = observe_stage(
            metrics,
            version=version,
            index=index,
            weight=weight,
            baseline_p95_seconds=baseline_p95_seconds,
            thresholds=thresholds_from(analysis),
            observe_seconds=observe_seconds,
            interval_seconds=analysis.interval,
            window_seconds=analysis.window,
            max_seconds=analysis.stage_limit(observe_seconds),
            exposure=exposure,
            on_measurement=log,
            gone=gone,
            control_version=control_version,
            signals=signals,
            stable_p95_seconds=stable_p95_seconds,
        )
    if traffic is not None:
        tally = traffic.tally
        result = replace(result, probe_sent=tally.sent, probe_failed=tally.failed)
        logger.info("stage %d: %s; they are in its figures", index + 1, tally.describe())
    try:
        ledger.stage_observed(deployment_id, result)
    except Exception as exc:  # the verdict stands; the outcome's record carries the stage later
        logger.warning(
            "stage %d could not be recorded in the tracking database: %s", index + 1, exc
        )
    if result.reason:
        logger.warning(
            "stage %d verdict %s: %s", index + 1, result.verdict.value, result.reason.reason
        )
    else:
        logger.info("stage %d verdict %s: %s", index + 1, result.verdict.value, result.explanation)
    return result


def observe_stage_for(observe_seconds: float, analysis: AnalysisSpec) -> Task[..., StageResult]:
    """``observe_canary_stage`` with a timeout fitted to this stage's length (see
    ``observation_timeout``): only a hung observation reaches it."""
    timeout = observation_timeout(analysis.stage_limit(observe_seconds), analysis.interval)
    return observe_canary_stage.with_options(timeout_seconds=timeout)


@task(name="plan-evidence", cache_policy=NO_CACHE, **retried(QUICK_CALL))
def plan_stage_evidence(
    metrics: Metrics, stable: Instance, steps: Sequence[int], observe_seconds: float,
    analysis: AnalysisSpec,
) -> list[str]:  # fmt: skip
    """What the service's traffic now buys each stage: its canary requests/s and when it will
    probably reach its verdict (``deployflow.rollout.plan_evidence``), logged and returned as
    lines for people. Empty when the traffic cannot be measured (the deploy goes on: this only
    informs)."""
    window = analysis.baseline_window
    logger = get_run_logger()
    try:
        sample = metrics.sample(stable.version, window)
    except Exception as exc:  # a metrics backend that raises: this step only informs
        logger.warning("no evidence plan: %s", exc)
        return []
    if sample.error is not None or not sample.requests or sample.error_rate is None:
        why = sample.error or "no traffic measured"
        logger.info("no evidence plan: %s's traffic over %g s: %s", stable.version, window, why)
        return []
    thresholds = thresholds_from(analysis)
    plans = plan_evidence(
        sample.requests / window, sample.error_rate, steps, observe_seconds,
        analysis.stage_limit(observe_seconds), analysis.interval, thresholds,
        analysis.probe_rate,
    )  # fmt: skip
    lines = [p.line(thresholds.max_error_rate, sample.error_rate) for p in plans]
    logger.info(
        "at %s's traffic now (%.3g requests/s):\n%s",
        stable.version,
        sample.requests / window,
        "\n".join(lines),
    )
    return lines
