"""A canary that waits at a ``pause`` step keeps being judged while nobody has answered yet.

A pause can last hours (its timeout) with the canary holding its share of the traffic. Argo
Rollouts' pause only waits; here a background thread measures the canary against the stable
version every analysis interval, as a stage would, and the moment a look fails (the error rate
above its limit beyond chance, P95 beyond its ratio, the canary gone) it puts all traffic back on
stable at once and answers the paused run's form itself with "not approved", so the rollout
rolls back without waiting for a person or the timeout. A failed look decides even when a
person approves at the same moment: the rollout reads the watch before the answer.

A tracking database that stops answering while the rollout waits fails the look too, as in a
stage: the deploy can neither renew its lease nor record, so traffic goes back while the lease
holds (``deployflow.tracking.answers``).

The spec's ``logs`` and ``alerts`` signals are judged at every look too, as in a stage (the logs
read from the moment the pause began): an alert that fires or error lines beyond their limit while
the rollout waits roll it back the same way.

A look that cannot be evaluated (metrics down, no data) rolls nothing back here: the person
looking at the form sees the same dashboards, and the next stage is judged from the start (it
never promotes on missing data).
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from prefect.runtime import flow_run

from deployflow.analysis import Breach, Measurement, Outcome, evaluate
from deployflow.backends import Backends
from deployflow.polling import Repeat
from deployflow.providers.base import Instance
from deployflow.rollout import canary_gone, thresholds_from
from deployflow.signals import with_signals
from deployflow.spec import AnalysisSpec
from deployflow.tracking.answers import silence_grace, tracking_silence_reason
from deployflow.tracking.lease import lease_seconds
from flows.oncall import deploy_run_id

WATCH_ANSWERER = "deployflow (the canary failed while paused)"


class PausedCanaryWatch:
    """Judge ``canary`` against ``stable`` every interval while the rollout waits at a pause.

    Use as a context manager around the wait; afterwards ``breach`` is the failed look (None
    while none failed).
    """

    def __init__(
        self,
        backends: Backends,
        analysis: AnalysisSpec,
        stable: Instance,
        canary: Instance,
        baseline_p95_seconds: float | None,
        timeout: float,
    ) -> None:
        self.backends = backends
        self.analysis = analysis
        self.stable = stable
        self.canary = canary
        self.baseline_p95_seconds = baseline_p95_seconds
        # Every look of the whole wait together keeps the analysis's confidence.
        self.looks = max(1, math.ceil(timeout / analysis.interval))
        self.breach: Measurement | None = None
        # Bound now, as the wait begins: the logs are read from here on.
        self._signals = [
            watch.probe(canary.version)
            for watch in (backends.logs, backends.alerts)
            if watch is not None
        ]
        self._started = time.monotonic()
        self._logger = get_run_logger()  # bound here: the thread has no run context
        with get_client(sync_client=True) as client:  # the run whose form the gate waits on
            self._run_id = deploy_run_id(client) or UUID(str(flow_run.get_id()))
        self._looks = Repeat(
            analysis.interval,
            self._look_once,
            name=f"deployflow-paused-watch-{canary.version}",
            # At most one look in flight (its metric queries have their own timeouts).
            join_timeout=analysis.interval + 60,
        )

    def __enter__(self) -> PausedCanaryWatch:
        self._looks.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._looks.__exit__(exc_type, exc, tb)

    def look(self) -> Measurement:
        """One look at the canary over the recent window, against stable over the same one."""
        version = self.canary.version
        silent = self.backends.ledger.stopped_answering(silence_grace(lease_seconds()))
        if silent is not None:
            # As in a stage: no lease renewal, no record; traffic back while the lease holds.
            reason = tracking_silence_reason(silent)
            breach = Breach("tracking_database", None, None, reason)
            return canary_gone(breach, self.baseline_p95_seconds)
        if not any(i.version == version for i in self.backends.target.instances()):
            return canary_gone(
                f"{version} is no longer running ({self.backends.target.describe()})",
                self.baseline_p95_seconds,
            )
        metrics, window = self.backends.metrics, self.analysis.window
        measurement = evaluate(
            metrics.sample(version, window),
            self.baseline_p95_seconds,
            thresholds_from(self.analysis),
            control=metrics.sample(self.stable.version, window),
            looks=self.looks,
        )
        if not self._signals:
            return measurement
        # The log lines count from the start of the wait: so do the requests they are judged by.
        elapsed = time.monotonic() - self._started
        requests = measurement.sample.requests
        if self.backends.logs is not None and elapsed > window:
            requests = metrics.sample(version, elapsed).requests
        return with_signals(measurement, [probe(elapsed, requests) for probe in self._signals])

    def _look_once(self) -> bool:
        """One look; True (stop looking) once it failed and traffic is back on stable."""
        try:
            measurement = self.look()
        except Exception:  # a broken look is no verdict; the next one may work
            self._logger.warning("a look at the paused canary failed", exc_info=True)
            return False
        if measurement.outcome is not Outcome.FAILED:
            return False
        self.breach = measurement
        self._act(measurement)
        return True

    def _act(self, measurement: Measurement) -> None:
        why = measurement.breaches[0].reason if measurement.breaches else measurement.note
        self._logger.error(
            "%s failed while the rollout waited for approval: %s; traffic back on %s",
            self.canary.version,
            why,
            self.stable.version,
        )
        try:
            self.backends.router.set_split(self.stable, None, 0)
        except Exception:  # the rollout restores again, with retries, once the wait ends
            self._logger.exception("could not put traffic back on %s", self.stable.version)
        try:
            resume_flow_run(self._run_id, run_input={"approved": False, "name": WATCH_ANSWERER})
        except Exception:  # answered meanwhile, or the server is gone: the breach still decides
            self._logger.warning("could not end the wait early", exc_info=True)
