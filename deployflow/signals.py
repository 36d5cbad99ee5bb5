"""Signals beyond the canary's metric queries: its logs, firing alerts, dependent services.

Each look of a stage, the logs and alerts are measured beside the metrics and folded into the
same measurement (``with_signals``), so they get the same verdicts and limits: a signal over its
threshold fails the measurement (a rollback), a signal that cannot be read is an Error (never a
promotion; past ``consecutive_error_limit`` a rollback). Before a deploy, ``preflight`` refuses to
start into an incident: an alert already firing, or a dependency already down.

The judging functions are pure; ``LogWatch`` and ``AlertWatch`` only add the reading.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from deployflow import figures
from deployflow.analysis import Breach, Measurement, Outcome
from deployflow.providers.base import AlertSource, Dependency, DependencyStatus, LogSource
from deployflow.spec import LogsSpec

# Longest log line kept as evidence; longer ones are cut.
MAX_EVIDENCE_CHARS = 300


@dataclass(frozen=True)
class SignalReading:
    """What one signal said at one look: an outcome like a measurement's, why, and evidence."""

    signal: str
    outcome: Outcome
    note: str
    breach: Breach | None = None
    evidence: tuple[str, ...] = ()


# A signal bound to one version for one stage: called each look with the seconds since the stage
# began and the requests the metrics counted over them (None when unknown).
SignalProbe = Callable[[float, float | None], SignalReading]


def judge_log_errors(
    matches: int,
    elapsed_seconds: float,
    requests: float | None,
    *,
    max_per_minute: float | None,
    max_per_1k_requests: float | None,
) -> tuple[Outcome, str, Breach | None]:
    """Whether ``matches`` error lines over the stage so far are too many.

    Per 1,000 requests when that threshold is given and the request count is known, else per
    minute. The budget is never smaller than one minute's (or 1,000 requests') worth, so a single
    line at the first look is not a rate of 30 a minute; beyond it the measurement fails at once.
    """
    minutes = max(elapsed_seconds, 0.0) / 60.0
    if max_per_1k_requests is not None and requests is not None and requests > 0:
        budget = max_per_1k_requests * max(requests, 1000.0) / 1000.0
        rate, unit = matches / requests * 1000.0, "per 1,000 requests"
        limit = max_per_1k_requests
        over = figures.requests(requests)
    elif max_per_minute is not None:
        budget = max_per_minute * max(minutes, 1.0)
        rate, unit = (matches / minutes if minutes > 0 else float(matches)), "per minute"
        limit = max_per_minute
        over = figures.duration(elapsed_seconds)
    else:
        note = f"{matches} error line(s), but no request count to judge them per 1,000 requests"
        return Outcome.INCONCLUSIVE, note, None
    text = (
        f"{matches} log line(s) matching the error patterns over {over} "
        f"({rate:.3g} {unit}; at most {limit:g} {unit})"
    )
    if matches > budget:
        reason = f"log errors: {text}"
        return Outcome.FAILED, reason, Breach("log_errors", rate, limit, reason)
    return Outcome.SUCCESSFUL, f"logs: {text}", None


def judge_alerts(names: Sequence[str], shown: Sequence[str], error: str | None) -> SignalReading:
    """Firing alerts fail the look; an Alertmanager that cannot be asked is an Error."""
    if error is not None:
        return SignalReading("alerts", Outcome.ERROR, f"alerts cannot be evaluated: {error}")
    if names:
        reason = f"alert(s) firing: {', '.join(names)}"
        return SignalReading(
            "alerts",
            Outcome.FAILED,
            reason,
            Breach("alerts", float(len(names)), 0.0, reason),
            tuple(f"alert: {a}" for a in shown),
        )
    return SignalReading("alerts", Outcome.SUCCESSFUL, "no matching alert fires")


_SEVERITY = {Outcome.FAILED: 3, Outcome.ERROR: 2, Outcome.INCONCLUSIVE: 1, Outcome.SUCCESSFUL: 0}


def with_signals(measurement: Measurement, readings: Sequence[SignalReading]) -> Measurement:
    """The measurement with the signals' verdicts folded in: the worst outcome wins (failed, then
    error, then inconclusive); breaches, notes and evidence are added."""
    if not readings:
        return measurement
    worst = max([measurement.outcome, *(r.outcome for r in readings)], key=_SEVERITY.__getitem__)
    breaches = measurement.breaches + tuple(r.breach for r in readings if r.breach is not None)
    notes = [measurement.note] if measurement.note else []
    notes.extend(r.note for r in readings)
    evidence = measurement.evidence + tuple(line for r in readings for line in r.evidence)
    return replace(
        measurement, outcome=worst, breaches=breaches, note="; ".join(notes), evidence=evidence
    )


def _clip(line: str) -> str:
    return line if len(line) <= MAX_EVIDENCE_CHARS else line[: MAX_EVIDENCE_CHARS - 3] + "..."


class LogWatch:
    """The ``logs`` section at work: a source and the patterns and thresholds to judge it by."""

    def __init__(self, source: LogSource, spec: LogsSpec) -> None:
        self.source = source
        self.spec = spec
        # One by one, not joined: a pattern may start with its own flags, e.g. "(?i)error".
        self.patterns = [re.compile(p) for p in spec.patterns]

    def matches(self, line: str) -> bool:
        """Whether ``line`` matches any of the error patterns."""
        return any(p.search(line) for p in self.patterns)

    def describe(self) -> str:
        return f"{self.source.describe()} for {' | '.join(self.spec.patterns)}"

    def probe(self, version: str) -> SignalProbe:
        """Start reading ``version``'s logs now; each call of the probe judges what was written
        since."""
        return _LogProbe(self, version)


class _LogProbe:
    """One stage's reading of one version's logs: where it stopped, what matched so far."""

    def __init__(self, watch: LogWatch, version: str) -> None:
        self.watch = watch
        self.version = version
        self.cursor = watch.source.read(version, None).cursor
        self.matches = 0
        self.kept: deque[str] = deque(maxlen=watch.spec.evidence_lines)

    def __call__(self, elapsed_seconds: float, requests: float | None) -> SignalReading:
        read = self.watch.source.read(self.version, self.cursor)
        self.cursor = read.cursor
        if read.error is not None:
            note = f"logs cannot be read: {read.error}"
            return SignalReading("logs", Outcome.ERROR, note)
        for line in read.lines:
            if self.watch.matches(line):
                self.matches += 1
                self.kept.append(_clip(line))
        spec = self.watch.spec
        outcome, note, breach = judge_log_errors(
            self.matches,
            elapsed_seconds,
            requests,
            max_per_minute=spec.max_per_minute,
            max_per_1k_requests=spec.max_per_1k_requests,
        )
        evidence = tuple(f"log: {line}" for line in self.kept) if breach is not None else ()
        return SignalReading("logs", outcome, note, breach, evidence)


class AlertWatch:
    """The ``alerts`` section at work."""

    def __init__(self, source: AlertSource) -> None:
        self.source = source

    def describe(self) -> str:
        return self.source.describe()

    def probe(self, version: str) -> SignalProbe:
        def measure(elapsed_seconds: float, requests: float | None) -> SignalReading:
            read = self.source.firing()
            return judge_alerts(read.names, [str(a) for a in read.alerts[:10]], read.error)

        return measure


def preflight(alerts: AlertWatch | None, dependencies: Sequence[Dependency]) -> list[str]:
    """Why the deploy must not start (empty when it may): matching alerts already firing ("do not
    deploy into an incident"), an Alertmanager that cannot be asked, dependencies already down."""
    problems: list[str] = []
    if alerts is not None:
        read = alerts.source.firing()
        if read.error is not None:
            problems.append(f"alerts cannot be evaluated ({read.error})")
        elif read.alerts:
            shown = "; ".join(str(a) for a in read.alerts[:5])
            problems.append(
                f"alert(s) already firing: {', '.join(read.names)} "
                f"(do not deploy into an incident: {shown})"
            )
    down = [s for s in check_dependencies(dependencies) if not s.ok]
    if down:
        problems.append("dependency down: " + "; ".join(f"{s.name} ({s.detail})" for s in down))
    return problems


def check_dependencies(dependencies: Sequence[Dependency]) -> list[DependencyStatus]:
    """Every dependency's status, in the spec's order."""
    return [d.check() for d in dependencies]
