"""The four DORA figures of a team's deploys, from the tracking database.

- Deployment frequency: successful real deploys per day over the period.
- Lead time for changes: from the commit's time (``commit_at``, recorded when the deploy started)
  to the deploy that released it succeeding; the median.
- Change failure rate: of the deploys that released a version (succeeded, rolled back, failed),
  the share that rolled back or failed. Aborted deploys changed nothing and do not count.
- Time to restore: from the moment a failed change took traffic (its first stage, else its start)
  to a healthy version serving again (the verified rollback; after a failed one, the next
  successful deploy of the service); the median. A failure not restored yet is counted apart.

Everything here is a pure function of the records, so the figures are tested on a seeded
database in milliseconds.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from deployflow.tracking import repository
from deployflow.tracking.models import Deployment

RELEASED = ("succeeded", "rolled_back", "failed")
FAILED = ("rolled_back", "failed")
_SINCE = re.compile(r"^\s*(\d+)\s*([hdw])\s*$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
MAX_SINCE = timedelta(days=3660)


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w`` as a period to look back over.

    Raises:
        ValueError: Not a whole number of hours, days or weeks (the message says the forms).
    """
    match = _SINCE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a period; use a whole number of h, d or w: 12h, 30d, 2w")
    try:
        period = int(match.group(1)) * _UNITS[match.group(2)]
    except OverflowError:  # more days than a timedelta holds: far beyond the limit below
        raise ValueError(f"{text!r}: the period may be at most 3660 days") from None
    if period <= timedelta(0):
        raise ValueError(f"{text!r}: the period must be longer than zero")
    if period > MAX_SINCE:
        raise ValueError(f"{text!r}: the period may be at most 3660 days")
    return period


@dataclass(frozen=True)
class DeployRecord:
    """The facts of one finished real deploy that the figures need."""

    service: str
    environment: str
    version: str
    status: str
    started_at: datetime
    finished_at: datetime
    commit_at: datetime | None = None
    traffic_at: datetime | None = None  # when the new version first took traffic

    @classmethod
    def from_row(cls, row: Deployment) -> DeployRecord:
        if row.finished_at is None:
            raise ValueError(f"deployment {row.id} has not finished")
        first = min((s.started_at for s in row.stages), default=None)
        return cls(
            service=row.service,
            environment=row.environment,
            version=row.version,
            status=row.status.value,
            started_at=row.started_at,
            finished_at=row.finished_at,
            commit_at=row.commit_at,
            traffic_at=first,
        )


@dataclass(frozen=True)
class DoraFigures:
    """The four figures of one service and environment (or all of them: ``None``)."""

    service: str | None
    environment: str | None
    since: datetime
    until: datetime
    deployments: int
    changes: int
    failures: int
    lead_times: tuple[float, ...]
    restore_times: tuple[float, ...]
    unrestored: int

    @property
    def days(self) -> float:
        return max((self.until - self.since).total_seconds() / 86400.0, 1e-9)

    @property
    def deployments_per_day(self) -> float:
        return self.deployments / self.days

    @property
    def change_failure_rate(self) -> float | None:
        return self.failures / self.changes if self.changes else None

    @property
    def lead_time_seconds(self) -> float | None:
        return statistics.median(self.lead_times) if self.lead_times else None

    @property
    def time_to_restore_seconds(self) -> float | None:
        return statistics.median(self.restore_times) if self.restore_times else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "environment": self.environment,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "deployments": self.deployments,
            "deployments_per_day": self.deployments_per_day,
            "lead_time_seconds": self.lead_time_seconds,
            "lead_time_samples": len(self.lead_times),
            "changes": self.changes,
            "failures": self.failures,
            "change_failure_rate": self.change_failure_rate,
            "time_to_restore_seconds": self.time_to_restore_seconds,
            "restores": len(self.restore_times),
            "unrestored": self.unrestored,
        }


def _restored_at(failure: DeployRecord, later: Sequence[DeployRecord]) -> datetime | None:
    if failure.status == "rolled_back":
        return failure.finished_at
    return next(
        (
            r.finished_at
            for r in later
            if r.status == "succeeded"
            and r.service == failure.service
            and r.environment == failure.environment
            and r.finished_at > failure.finished_at
        ),
        None,
    )


def figures(
    records: Iterable[DeployRecord],
    since: datetime,
    until: datetime,
    *,
    service: str | None = None,
    environment: str | None = None,
) -> DoraFigures:
    """The four figures of the deploys that finished between ``since`` and ``until``."""
    chosen = sorted(
        (
            r
            for r in records
            if since <= r.finished_at <= until
            and (service is None or r.service == service)
            and (environment is None or r.environment == environment)
        ),
        key=lambda r: r.finished_at,
    )
    succeeded = [r for r in chosen if r.status == "succeeded"]
    failed = [r for r in chosen if r.status in FAILED]
    lead_times = tuple(
        (r.finished_at - r.commit_at).total_seconds()
        for r in succeeded
        if r.commit_at is not None and r.commit_at <= r.finished_at
    )
    restores: list[float] = []
    unrestored = 0
    for f in failed:
        restored = _restored_at(f, chosen)
        if restored is None:
            unrestored += 1
            continue
        broke = f.traffic_at or f.started_at
        restores.append(max((restored - broke).total_seconds(), 0.0))
    return DoraFigures(
        service=service,
        environment=environment,
        since=since,
        until=until,
        deployments=len(succeeded),
        changes=len([r for r in chosen if r.status in RELEASED]),
        failures=len(failed),
        lead_times=lead_times,
        restore_times=tuple(restores),
        unrestored=unrestored,
    )


def figures_by_service(
    records: Sequence[DeployRecord], since: datetime, until: datetime
) -> list[DoraFigures]:
    """One ``DoraFigures`` per service and environment seen, in name order."""
    groups = sorted({(r.service, r.environment) for r in records})
    return [
        figures(records, since, until, service=service, environment=environment)
        for service, environment in groups
    ]


def frequency(per_day: float) -> str:
    """Deploys per day for people: ``3.5 a day``, ``2 a week``, ``none``."""
    if per_day <= 0:
        return "none"
    if per_day >= 1:
        return f"{per_day:.1f} a day"
    per_week = per_day * 7
    if per_week >= 1:
        return f"{per_week:.1f} a week"
    return f"{per_day * 30:.1f} a month"


def table_rows(all_figures: Sequence[DoraFigures]) -> list[dict[str, str]]:
    """The figures as table rows for people (the weekly artifact, the CLI)."""
    from deployflow.figures import duration, percent

    rows = []
    for f in all_figures:
        rows.append(
            {
                "service": f.service or "all",
                "environment": f.environment or "all",
                "deployment frequency": f"{frequency(f.deployments_per_day)} "
                f"({f.deployments} in {f.days:.0f} d)",
                "lead time for changes": duration(f.lead_time_seconds)
                + (f" (median of {len(f.lead_times)})" if f.lead_times else ""),
                "change failure rate": f"{percent(f.change_failure_rate)} "
                f"({f.failures} of {f.changes})",
                "time to restore": duration(f.time_to_restore_seconds)
                + (f" (median of {len(f.restore_times)})" if f.restore_times else "")
                + (f", {f.unrestored} not restored" if f.unrestored else ""),
            }
        )
    return rows


def compute(
    session: Session,
    since: datetime,
    until: datetime,
    *,
    service: str | None = None,
    environment: str | None = None,
) -> list[DoraFigures]:
    """The figures from the tracking database: one row per service and environment (within the
    filters), then all of them together when there is more than one."""
    records = [
        DeployRecord.from_row(row)
        for row in repository.finished_since(
            session, since, service=service, environment=environment
        )
    ]
    groups = figures_by_service(records, since, until)
    if len(groups) == 1:
        return groups
    total = figures(records, since, until, service=service, environment=environment)
    return [*groups, total]
