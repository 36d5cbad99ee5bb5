"""A deploy as the tracking database keeps it, typed: what its summary and its incident report
are rendered from (``deployflow.notify.report``).

``record_of`` is the one function that reads a deployment row (its stages and their
measurements, its checks, its flag changes, its incident) into a ``DeployRecord``; every report
of every path (a stage rollback, an early stop, verification, a refused gate, a success) is
written from that record, so a figure the database holds is the figure the reports show.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployflow.figures import trigger_headline

if TYPE_CHECKING:  # the rows it reads; SQLAlchemy is not needed to load the deploy flow
    from deployflow.tracking.models import Deployment, Incident, StageResult

# How the JSON columns spell a non-finite float (``repository._json_safe``).
_NON_FINITE = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _NON_FINITE.get(value)
    return None


def _text(value: object) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Figures:
    """One version's figures over one window; ``error`` when its queries failed."""

    error_rate: float | None = None
    p95_seconds: float | None = None
    requests: float | None = None
    error: str | None = None

    @property
    def measured(self) -> bool:
        """The queries answered with a request count (something was measured)."""
        return self.error is None and self.requests is not None

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Figures | None:
        if not data:
            return None
        return cls(
            _number(data.get("error_rate")),
            _number(data.get("p95_seconds")),
            _number(data.get("requests")),
            data.get("error") or None,
        )


@dataclass(frozen=True)
class Look:
    """One measurement of a stage: the canary's figures, the stable's over the same window, the
    analysis's outcome and what the other signals saw."""

    outcome: str
    canary: Figures
    stable: Figures | None = None
    note: str = ""
    evidence: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Look:
        return cls(
            outcome=_text(data.get("outcome")) or "unknown",
            canary=Figures.of(data) or Figures(),
            stable=Figures.of(data.get("stable")),
            note=_text(data.get("note")),
            evidence=tuple(str(e) for e in data.get("evidence") or ()),
        )


@dataclass(frozen=True)
class StageRecord:
    """One stage: where traffic was, the verdict, its looks."""

    index: int
    weight: int
    verdict: str
    started_at: datetime | None
    finished_at: datetime | None
    looks: tuple[Look, ...] = ()
    reason: str = ""
    label: str = ""
    note: str = ""

    @property
    def observed(self) -> str:
        """What the stage observed, in words: its label, else "25% canary"."""
        return self.label or f"{self.weight}% canary"

    @property
    def last(self) -> Look | None:
        """The latest look that measured something (an inconclusive one too: a stage stopped
        for too little evidence still shows what it saw)."""
        return next((m for m in reversed(self.looks) if m.canary.measured), None)

    @property
    def counts(self) -> dict[str, int]:
        """How many looks had each outcome."""
        return dict(Counter(m.outcome for m in self.looks))

    @property
    def failed_queries(self) -> list[str]:
        """The errors of the looks whose metric queries failed."""
        return [m.canary.error for m in self.looks if m.canary.error]


@dataclass(frozen=True)
class CheckLine:
    """A post-deploy verification check (of the release, or of the restored version)."""

    name: str
    ok: bool
    detail: str

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> CheckLine:
        return cls(_text(data.get("name")), bool(data.get("ok")), _text(data.get("detail")))


@dataclass(frozen=True)
class CheckRow:
    """A gate of step 1 or 2 as recorded."""

    step: str
    name: str
    status: str
    detail: str


@dataclass(frozen=True)
class FlagRow:
    """A feature flag change the deploy made."""

    flag: str
    percent: int
    reason: str
    changed_at: datetime | None = None


@dataclass(frozen=True)
class IncidentRecord:
    """Why the deploy was rolled back, and what the rollback found.

    ``headline`` is the trigger in about 20 words with its figure and limit; ``reason`` the
    analysis's full statistics, told once.
    """

    stage: int | None
    weight: int | None
    metric: str
    value: float | None
    threshold: float | None
    reason: str
    headline: str
    requests: float | None = None
    verified: bool = False
    error: str | None = None
    restore_seconds: float | None = None
    traffic_at_trigger: str = ""
    router_after: str = ""
    canary_log_tail: str = ""
    problems: tuple[str, ...] = ()
    verification: tuple[CheckLine, ...] = ()
    last_looks: tuple[Look, ...] = ()
    # A failed restore's raw error, redacted, for engineers (``error`` says it in words).
    error_detail: str = ""

    @property
    def signals(self) -> list[str]:
        """What the log and alert signals saw in the last looks: each line once, in order."""
        return list(dict.fromkeys(line for m in self.last_looks for line in m.evidence))


@dataclass(frozen=True)
class SchemaRow:
    """A schema change the deploy applied, and what became of it (``status``, ``detail``)."""

    before: str | None
    after: str | None
    status: str
    command: str
    detail: str


@dataclass(frozen=True)
class DeployRecord:
    """One deploy, read back from the tracking database."""

    id: int
    service: str
    environment: str
    version: str
    previous_version: str | None
    strategy: str
    status: str
    dry_run: bool = False
    flow_run_id: str | None = None
    git_ref: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str = ""
    stages: tuple[StageRecord, ...] = ()
    checks: tuple[CheckRow, ...] = ()
    flag_changes: tuple[FlagRow, ...] = ()
    incident: IncidentRecord | None = None
    strategy_rationale: str = ""
    # The risk table the strategy was chosen with: {"score", "level", "factors"}.
    risk: Mapping[str, Any] = field(default_factory=dict)
    baseline_p95_seconds: float | None = None
    switch_seconds: float | None = None
    verification: tuple[CheckLine, ...] = ()
    reconciled: tuple[str, ...] = ()
    schema_changes: tuple[SchemaRow, ...] = ()

    @property
    def stage_of_incident(self) -> StageRecord | None:
        if self.incident is None or self.incident.stage is None:
            return None
        return next((s for s in self.stages if s.index == self.incident.stage), None)


def _stage(row: StageResult) -> StageRecord:
    return StageRecord(
        index=row.index,
        weight=row.weight,
        verdict=row.verdict,
        started_at=row.started_at,
        finished_at=row.finished_at,
        looks=tuple(Look.of(m) for m in row.measurements or () if isinstance(m, Mapping)),
        reason=row.reason or "",
        label=row.label or "",
        note=row.note or "",
    )


def _incident(row: Incident, stages: Sequence[StageRecord]) -> IncidentRecord:
    ev: Mapping[str, Any] = row.evidence or {}
    weight = ev.get("weight")
    if weight is None and row.stage is not None:
        weight = next((s.weight for s in stages if s.index == row.stage), None)
    count = _number(ev.get("requests"))
    # Older records kept no headline: rebuilt from the metric, the figure and the limit.
    headline = _text(ev.get("headline")) or trigger_headline(
        row.metric, row.value, row.threshold, detail=row.reason
    )
    return IncidentRecord(
        stage=row.stage,
        weight=weight if isinstance(weight, int) else None,
        metric=row.metric,
        value=row.value,
        threshold=row.threshold,
        reason=row.reason,
        headline=headline,
        requests=count,
        verified=bool(ev.get("verified")) and not ev.get("error"),
        error=ev.get("error") or None,
        restore_seconds=_number(ev.get("restore_seconds")),
        traffic_at_trigger=_text(ev.get("traffic_at_trigger")),
        router_after=_text(ev.get("router_after")),
        canary_log_tail=_text(ev.get("canary_log_tail")),
        problems=tuple(str(p) for p in ev.get("problems") or ()),
        verification=tuple(CheckLine.of(c) for c in ev.get("verification") or ()),
        last_looks=tuple(Look.of(m) for m in ev.get("last_measurements") or ()),
        error_detail=_text(ev.get("error_detail")),
    )


def record_of(row: Deployment) -> DeployRecord:
    """The record of a loaded deployment (``repository.get_deployment`` loads its children)."""
    stages = tuple(_stage(s) for s in row.stages)
    details: Mapping[str, Any] = row.details or {}
    checks = tuple(
        CheckRow(
            c.step,
            c.name,
            c.status.value,
            " ".join(x for x in (c.figure, c.reason) if x)
            or _text((c.details or {}).get("detail"))
            or c.status.value,
        )
        for c in row.checks
    )
    return DeployRecord(
        id=row.id,
        service=row.service,
        environment=row.environment,
        version=row.version,
        previous_version=row.previous_version,
        strategy=row.strategy,
        status=row.status.value,
        dry_run=row.dry_run,
        flow_run_id=row.flow_run_id,
        git_ref=row.git_ref,
        started_at=row.started_at,
        finished_at=row.finished_at,
        message=row.summary or "",
        stages=stages,
        checks=checks,
        flag_changes=tuple(
            FlagRow(f.flag, f.percent, f.reason, f.changed_at) for f in row.flag_changes
        ),
        incident=_incident(row.incidents[-1], stages) if row.incidents else None,
        strategy_rationale=_text(details.get("strategy_rationale")),
        risk=dict(details.get("risk") or {}),
        baseline_p95_seconds=_number(details.get("baseline_p95_seconds")),
        switch_seconds=_number(details.get("switch_seconds")),
        verification=tuple(CheckLine.of(c) for c in details.get("verification") or ()),
        reconciled=tuple(str(n) for n in details.get("reconciled") or ()),
        schema_changes=tuple(
            SchemaRow(c.revision_before, c.revision_after, c.status, c.command, c.detail)
            for c in row.schema_changes
        ),
    )
