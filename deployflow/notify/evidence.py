"""Gathering what a report after a deploy shows, and keeping it: range queries, the breakdown by
endpoint and status code, the canary's log around the trigger, the commits released (git), the
chart. Every source is optional and none of them raises: what cannot be had is named in
``ReportEvidence.problems`` and the report is written without it."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from deployflow.checks.process import controlled_env, run_command
from deployflow.notify.charts import render_chart
from deployflow.notify.report import (
    CHART_NAME,
    Commit,
    Report,
    ReportEvidence,
    chart_range,
    chart_title,
    kind_of,
    lines_around,
    render,
    trigger_time,
)
from deployflow.providers.base import Metrics, MetricsOverTime, Target
from deployflow.tracking.record import DeployRecord

GIT_TIMEOUT = 10.0
LOG_LINES_READ = 400
_FIELD = "\x1f"


@dataclass(frozen=True)
class StorySources:
    """Where a report's evidence comes from; each may be missing.

    Attributes:
        metrics: The run's metrics backend (charts and breakdown need ``MetricsOverTime``).
        target: Where the canary ran (its log).
        checkout: The service's git checkout (the commits released).
        previous_ref: The git ref of the version that ran before.
        window_seconds: The analysis window: each chart point covers the window before it.
        error_rate_limit: The spec's ``max_error_rate``, drawn on the chart.
    """

    metrics: Metrics | None = None
    target: Target | None = None
    checkout: Path | None = None
    previous_ref: str | None = None
    window_seconds: float = 30.0
    error_rate_limit: float | None = None


def _git(checkout: Path, *args: str) -> tuple[str, str | None]:
    outcome = run_command(
        ["git", *args], cwd=checkout, timeout=GIT_TIMEOUT, env=controlled_env({}, os.environ)
    )
    if outcome.launch_error:
        return "", outcome.launch_error
    if not outcome.succeeded:
        return "", (outcome.stderr.strip().splitlines() or ["git failed"])[-1]
    return outcome.stdout, None


def commit_time(checkout: Path, ref: str) -> datetime | None:
    """When the commit ``ref`` names was made (committer time); None when git cannot say."""
    if not checkout.is_dir() or ref.startswith("-"):
        return None
    out, problem = _git(checkout, "show", "-s", "--format=%cI", f"{ref}^{{commit}}", "--")
    if problem is not None or not out.strip():
        return None
    try:
        return datetime.fromisoformat(out.strip())
    except ValueError:
        return None


def commits_between(
    checkout: Path, previous_ref: str, new_ref: str
) -> tuple[tuple[Commit, ...] | None, str | None]:
    """The commits reachable from ``new_ref`` and not from ``previous_ref``, newest first; or
    None and why not."""
    if not checkout.is_dir():
        return None, f"commits: checkout {checkout} is not a directory"
    if previous_ref.startswith("-") or new_ref.startswith("-"):
        return None, "commits: refs may not start with '-'"
    out, problem = _git(
        checkout,
        "log",
        f"--format=%H{_FIELD}%an{_FIELD}%cI{_FIELD}%s",
        f"{previous_ref}..{new_ref}",
        "--",
    )
    if problem is not None:
        return None, f"commits: git log {previous_ref[:12]}..{new_ref[:12]} failed: {problem}"
    commits = []
    for line in out.splitlines():
        parts = line.split(_FIELD)
        if len(parts) != 4:
            continue
        try:
            when = datetime.fromisoformat(parts[2])
        except ValueError:
            continue
        commits.append(Commit(parts[0], parts[1], when, parts[3]))
    return tuple(commits), None


def gather(record: DeployRecord, sources: StorySources) -> ReportEvidence:
    """Everything the report of ``record`` (as ``Ledger.record`` reads it) can show."""
    problems: list[str] = []
    canary = stable = breakdown = stable_breakdown = None
    version, previous = record.version, record.previous_version
    metrics = sources.metrics
    try:
        span = chart_range(record, sources.window_seconds)
    except ValueError as exc:
        span = None
        problems.append(f"charts: {exc}")
    if span is not None and isinstance(metrics, MetricsOverTime):
        args = (span.start, span.end, span.step_seconds, sources.window_seconds)
        canary = metrics.history(version, *args)
        breakdown = metrics.breakdown(version, span.start, span.end)
        if previous:
            stable = metrics.history(previous, *args)
            stable_breakdown = metrics.breakdown(previous, span.start, span.end)
    elif span is not None:
        what = metrics.describe() if metrics is not None else "no metrics backend"
        problems.append(f"charts: {what} cannot answer for a past time range")
    log_lines: tuple[str, ...] = ()
    if record.incident is not None:
        log_lines = _canary_log(record, sources.target)
    commits, commit_range = None, ""
    if sources.checkout is not None and record.git_ref:
        if sources.previous_ref:
            commit_range = f"{sources.previous_ref[:10]}..{record.git_ref[:10]}"
            commits, problem = commits_between(
                sources.checkout, sources.previous_ref, record.git_ref
            )
            if problem:
                problems.append(problem)
        else:
            problems.append("commits: no earlier successful deploy recorded a git ref")
    return ReportEvidence(
        canary=canary,
        stable=stable,
        breakdown=breakdown,
        stable_breakdown=stable_breakdown,
        log_lines=log_lines,
        commits=commits,
        commit_range=commit_range,
        error_rate_limit=sources.error_rate_limit,
        problems=tuple(problems),
    )


def _canary_log(record: DeployRecord, target: Target | None) -> tuple[str, ...]:
    """The canary's log lines around the trigger from the target's log, when it still has it
    (more lines than the tail the rollback kept, which the report falls back on)."""
    if target is None:
        return ()
    return lines_around(target.logs(record.version, lines=LOG_LINES_READ), trigger_time(record))


def tell(record: DeployRecord, sources: StorySources) -> Report | None:
    """The report ``record`` gets (incident or success summary) with its chart, or None."""
    if kind_of(record) is None:
        return None
    evidence = gather(record, sources)
    chart = None
    try:
        span = chart_range(record, sources.window_seconds)
        chart = render_chart(
            chart_title(record),
            evidence.canary,
            evidence.stable,
            span.markers,
            canary_label=f"{record.version} (canary)",
            stable_label=f"{record.previous_version or 'stable'} (stable)",
            error_rate_limit=sources.error_rate_limit,
        )
    except ValueError:
        pass  # no range: gather() already named it
    return render(record, evidence, chart)


@dataclass(frozen=True)
class Copies:
    """Where a report was kept (``kept``, in order) and where not, with why (``lost``)."""

    kept: tuple[str, ...]
    lost: tuple[tuple[str, str], ...]


def keep_copies(copies: Sequence[tuple[str, Callable[[], object]]]) -> Copies:
    """Write each copy of a report in turn, in the order given: the ones the next deploy and
    people read (the tracking database, the Prefect artifact) first, the file under the data
    dir last. One that fails (a full or read-only disk, a database that does not answer) is
    named with why and never stops the others."""
    kept: list[str] = []
    lost: list[tuple[str, str]] = []
    for where, write in copies:
        try:
            write()
        except Exception as exc:
            lost.append((where, failure_words(exc)))
        else:
            kept.append(where)
    return Copies(tuple(kept), tuple(lost))


def failure_words(exc: BaseException) -> str:
    """A write's failure in words: ``No space left on device (/data/reports/x/report.md)`` for
    a file, the first line of the message otherwise."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def save(report: Report, directory: Path) -> Path:
    """Write the report as ``report.md`` with its chart as ``chart.png`` beside it; returns the
    report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "report.md"
    if report.chart_png is not None:
        write_whole(directory / CHART_NAME, report.chart_png)
    write_whole(path, report.markdown.encode())
    return path


def write_whole(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: through a temporary file beside it, renamed over it
    once written; a disk that refuses part way (full, read-only) leaves no truncated file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_as(report: Report, path: Path) -> list[Path]:
    """Write the report to ``path`` and its chart beside it as ``<stem>-chart.png`` (linked
    from the markdown); returns the files written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if report.chart_png is not None:
        chart = path.with_name(f"{path.stem}-chart.png")
        chart.write_bytes(report.chart_png)
        written.append(chart)
        path.write_text(report.linked(chart.name))
    else:
        path.write_text(report.markdown)
    return written


def report_dir(service: str, deployment_id: int) -> Path:
    """Where the report of one deploy is written: ``<data dir>/reports/<service>-<id>/``."""
    from deployflow.tracking import db  # its SQLAlchemy only once a report is written

    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in service)
    return db.data_dir() / "reports" / f"{safe}-{deployment_id}"
