"""The story of a deploy after it ended: the incident report of a rollback and the summary of a
success, written for people.

Both are rendered from the deploy as the tracking database keeps it (``Ledger.deployment``: the
row, its stages, its incident) plus ``ReportEvidence`` gathered once the deploy ended (range
queries, the breakdown by endpoint and status code, the canary's log, the commits released), so
``deployflow report`` shows what the run showed. Figures are for humans: percentages,
milliseconds, whole request counts, the router's state in words.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from deployflow.figures import (
    duration,
    millis,
    percent,
    requests,
    sample_figures,
    whole,
)
from deployflow.notify.charts import Marker, data_uri
from deployflow.providers.base import MetricHistory, Points, RequestBreakdown
from deployflow.tracking.record import DeployRecord, Figures, IncidentRecord, Look, StageRecord

CHART_NAME = "chart.png"
# Log lines shown around the trigger: from a minute before it to a quarter minute after.
LOG_BEFORE = timedelta(seconds=60)
LOG_AFTER = timedelta(seconds=15)
LOG_LINES_SHOWN = 30
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
_ERRORISH = re.compile(r"\b(error|exception|traceback|fatal|panic|critical|5\d\d)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Commit:
    """One commit between the previous and the released ref."""

    sha: str
    author: str
    committed_at: datetime
    subject: str


@dataclass(frozen=True)
class ReportEvidence:
    """What was gathered for the report once the deploy ended; ``problems`` says what could not
    be had (each piece is optional: a report is written with whatever there is)."""

    canary: MetricHistory | None = None
    stable: MetricHistory | None = None
    breakdown: RequestBreakdown | None = None
    stable_breakdown: RequestBreakdown | None = None
    log_lines: tuple[str, ...] = ()
    commits: tuple[Commit, ...] | None = None  # None: no repository to ask
    commit_range: str = ""
    error_rate_limit: float | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cause:
    """A candidate cause of an incident, with the evidence for it; higher ``weight`` first."""

    weight: float
    title: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """A rendered report: markdown naming its chart ``CHART_NAME``, and the chart (if any)."""

    kind: str  # "incident" or "summary"
    markdown: str
    chart_png: bytes | None = None

    def embedded(self) -> str:
        """The markdown with the chart inside it as a data URI (the Prefect artifact)."""
        if self.chart_png is None:
            return self.markdown
        return self.markdown.replace(f"]({CHART_NAME})", f"]({data_uri(self.chart_png)})")

    def linked(self, chart_file: str) -> str:
        """The markdown pointing at the chart written as ``chart_file`` beside it."""
        return self.markdown.replace(f"]({CHART_NAME})", f"]({chart_file})")


def _clock(at: datetime | None) -> str:
    return at.strftime("%H:%M:%S") if at is not None else "--:--:--"


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:300]


# --- the deploy as the tracking database keeps it -----------------------------------------------


def _look_figures(look: Look | None) -> str:
    if look is None:
        return "no data"
    c = look.canary
    return sample_figures(c.error_rate, c.p95_seconds, c.requests)


_VERDICTS = {"promote": "promoted", "rollback": "rolled back", "continue": "still observing"}


def _verdict(stage: StageRecord) -> str:
    return _VERDICTS.get(stage.verdict, stage.verdict)


def trigger_time(record: DeployRecord) -> datetime | None:
    """When the rollback was decided: the end of the stage that tripped it, or (verification or
    a step that broke) the end of the last stage, else the deploy's end."""
    tripped = record.stage_of_incident
    if tripped is not None:
        return tripped.finished_at
    if record.stages:
        return record.stages[-1].finished_at
    return record.finished_at


def timeline(record: DeployRecord) -> list[tuple[datetime | None, str]]:
    """What happened, in order: the start, each stage (traffic moved, verdict), the trigger and
    the rollback, or the promotion."""
    version = record.version
    events: list[tuple[datetime | None, str]] = [
        (
            record.started_at,
            f"Deploy of {version} to {record.environment} started "
            f"({record.strategy}; {record.previous_version or 'nothing'} live)",
        )
    ]
    for s in record.stages:
        moved = s.label or f"{s.weight}% of traffic on {version}"
        events.append((s.started_at, f"Stage {s.index + 1}: {moved}"))
        events.append(
            (s.finished_at, f"Stage {s.index + 1} {_verdict(s)}: {_look_figures(s.last)}")
        )
    incident = record.incident
    if incident is not None:
        events.append((trigger_time(record), f"Trigger: {incident.headline}"))
        previous = record.previous_version or "the previous version"
        if incident.error:
            done = f"Rollback FAILED: {incident.error}"
        elif incident.verified:
            done = f"Rollback done: all traffic on {previous}, verified healthy"
        else:
            done = f"Rollback done: traffic on {previous}, NOT verified healthy"
        events.append((record.finished_at, done))
    elif record.status == "succeeded":
        events.append(
            (record.finished_at, f"{version} serves all the traffic and passed verification")
        )
    else:
        events.append((record.finished_at, f"Ended {record.status.replace('_', ' ')}"))
    return events


def chart_markers(record: DeployRecord) -> list[Marker]:
    """The stages' starts and the trigger, for the chart."""
    markers = [Marker(s.started_at, f"{s.weight}%") for s in record.stages if s.started_at]
    if record.incident is not None and (at := trigger_time(record)) is not None:
        markers.append(Marker(at, "trigger", alarm=True))
    return markers


# --- evidence -----------------------------------------------------------------------------------


def _line_time(line: str) -> datetime | None:
    match = _TIMESTAMP.search(line)
    if match is None:
        return None
    text = match.group(0).replace(" ", "T").replace("Z", "+00:00")
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def lines_around(log: str, at: datetime | None) -> tuple[str, ...]:
    """The log lines that tell about the trigger at ``at``: timestamped lines from
    ``LOG_BEFORE`` before it to ``LOG_AFTER`` after it; in a log without timestamps, the lines
    that look like errors. A traceback is kept as its first and its last line (the exception that
    names the fault), not its frames. The last ``LOG_LINES_SHOWN`` of them."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    timed = [(line, _line_time(line)) for line in lines]
    chosen: list[str] = []
    if at is not None and any(t is not None for _, t in timed):
        keep = False
        block: list[str] = []  # the untimestamped lines after a chosen line (a traceback)
        for line, t in timed:
            if t is None:
                if keep:
                    block.append(line)
                continue
            chosen += _exception_line(block)
            block = []
            keep = at - LOG_BEFORE <= t <= at + LOG_AFTER
            if keep:
                chosen.append(line)
        chosen += _exception_line(block)
    else:
        for n, line in enumerate(lines):
            if line.lstrip().startswith("Traceback"):
                chosen.append(line)
                chosen += _exception_line(lines[n + 1 :], stop_at_unindented=True)
            elif _ERRORISH.search(line) and (not chosen or chosen[-1] != line):
                chosen.append(line)
    return tuple(chosen[-LOG_LINES_SHOWN:])


def _exception_line(block: list[str], *, stop_at_unindented: bool = False) -> list[str]:
    """The line of a traceback that names the exception: the first unindented line after its
    frames (or the block's last line)."""
    if not block:
        return []
    if stop_at_unindented:
        for line in block:
            if line and not line[0].isspace():
                return [line]
        return []
    return [block[-1]]


def _average(points: Points) -> float | None:
    return sum(v for _, v in points) / len(points) if points else None


def _peak(points: Points) -> float | None:
    return max(v for _, v in points) if points else None


def _error_rows(breakdown: RequestBreakdown | None) -> list[tuple[str, str, float]]:
    if breakdown is None:
        return []
    return [r for r in breakdown.rows if r[1].startswith("5")]


def candidate_causes(record: DeployRecord, evidence: ReportEvidence) -> list[Cause]:
    """Where to look first, strongest evidence first. Each cause says what points at it; the
    weights only order them (a person judges)."""
    incident = record.incident
    causes: list[Cause] = []
    metric = incident.metric if incident else ""
    canary_rate = _average(evidence.canary.error_rate) if evidence.canary else None
    stable_rate = _average(evidence.stable.error_rate) if evidence.stable else None
    canary_p95 = _peak(evidence.canary.p95_seconds) if evidence.canary else None
    stable_p95 = _average(evidence.stable.p95_seconds) if evidence.stable else None
    version = record.version
    previous = record.previous_version or "the stable version"

    if metric == "error_rate" or (canary_rate or 0) > 2 * (stable_rate or 0) + 0.01:
        stable_fine = stable_rate is not None and stable_rate < (canary_rate or 0) / 3
        lines: list[str] = []
        if canary_rate is not None:  # averages only from what the range queries answered
            lines.append(
                f"{version} failed {percent(canary_rate)} of its requests on average over the "
                f"deploy; {previous} {percent(stable_rate)} over the same time"
            )
        if incident and metric == "error_rate":
            lines.append(f"the trigger: {incident.headline}")
        causes.append(
            Cause(
                0.9 if stable_fine else 0.5,
                f"A defect in {version} that fails requests (the stable version did not)"
                if stable_fine
                else f"Requests fail in {version}",
                tuple(lines),
            )
        )
    if evidence.breakdown is not None and _error_rows(evidence.breakdown):
        causes.append(_endpoint_cause(evidence.breakdown))
    if metric.startswith("p95") or (
        canary_p95 is not None and stable_p95 and canary_p95 > 2 * stable_p95
    ):
        causes.append(
            Cause(
                0.8 if metric.startswith("p95") else 0.4,
                f"{version} is slower (a slow query, a new call, less capacity)",
                (f"canary P95 up to {millis(canary_p95)} against {millis(stable_p95)} on stable",),
            )
        )
    if stable_rate is not None and stable_rate > 0.01 and (canary_rate or 0) <= 3 * stable_rate:
        causes.append(
            Cause(
                0.7,
                "Something both versions depend on (a database, a downstream service, the "
                "network), not the new code alone",
                (
                    f"the stable version failed {percent(stable_rate)} of its requests too "
                    f"(canary {percent(canary_rate)})",
                ),
            )
        )
    if metric in ("metrics", "inconclusive", "canary_down", "error", "analysis"):
        # The headline, not the analysis's statistics: the report quotes those once, above.
        reason = incident.headline if incident else ""
        failed_queries = record.stages[-1].failed_queries if record.stages else []
        metrics_title = (
            f"The metrics backend, not the service: {len(failed_queries)} queries failed"
            if failed_queries
            # Blame no backend that answered: every query came back, the figures did not decide.
            else "The analysis could not judge the figures (every metric query answered)"
        )
        title = {
            "metrics": metrics_title,
            "inconclusive": "Not enough evidence: the canary could not be shown healthy in time",
            "canary_down": f"{version} stopped answering (crash, out of memory, failed health)",
        }.get(metric, "A step of the deploy itself broke")
        causes.append(Cause(0.75, title, (reason, *failed_queries[-1:])))
    messages: Counter[str] = Counter()
    for line in evidence.log_lines:
        if _ERRORISH.search(line):
            text = _TIMESTAMP.sub("", line).strip(" -:")
            messages[text[:160]] += 1
    if messages:
        text, count = messages.most_common(1)[0]
        causes.append(
            Cause(
                0.5,
                "What the canary's log says",
                (f"{count} of {len(evidence.log_lines)} lines around the trigger: `{text}`",),
            )
        )
    if evidence.commits:
        newest = evidence.commits[:5]
        more = len(evidence.commits) - len(newest)
        causes.append(
            Cause(
                0.45,
                f"One of the {len(evidence.commits)} commits released ({evidence.commit_range})"
                if len(evidence.commits) > 1
                else f"The one commit released ({evidence.commit_range})",
                tuple(f"{c.sha[:10]} {c.subject} ({c.author})" for c in newest)
                + ((f"and {more} more",) if more else ()),
            )
        )
    causes.sort(key=lambda c: -c.weight)
    return [Cause(c.weight, c.title, tuple(e for e in c.evidence if e)) for c in causes]


def _endpoint_cause(breakdown: RequestBreakdown) -> Cause:
    """Whether the canary's failures sit on one endpoint (its code path) or on every endpoint
    alike (the whole version: configuration, a dependency, start-up)."""
    served: dict[str, float] = {}
    failed: dict[str, float] = {}
    for endpoint, code, n in breakdown.rows:
        served[endpoint] = served.get(endpoint, 0.0) + n
        if code.startswith("5"):
            failed[endpoint] = failed.get(endpoint, 0.0) + n
    total_served, total_failed = sum(served.values()), sum(failed.values())
    rates = {e: failed.get(e, 0.0) / n for e, n in served.items() if n > 0}
    worst = max(rates, key=lambda e: (rates[e], failed.get(e, 0.0)))
    rest_served = total_served - served[worst]
    rest_rate = (total_failed - failed[worst]) / rest_served if rest_served > 0 else None
    lines = tuple(
        f"`{e}`: {percent(rates[e])} of {requests(served[e])} answered 5xx"
        for e in sorted(rates, key=lambda e: -rates[e])[:5]
    )
    if rest_rate is not None and rates[worst] < 2 * rest_rate:
        return Cause(
            0.55,
            "Requests fail on every endpoint alike: the whole version (configuration, a "
            "dependency, start-up), not one code path",
            lines,
        )
    return Cause(
        0.85,
        f"The code behind `{worst}`",
        (
            f"{round(failed[worst])} of the canary's {requests(total_failed)} answered 5xx were "
            f"on `{worst}` ({percent(failed[worst] / total_failed)}); it failed "
            f"{percent(rates[worst])} of its {requests(served[worst])}, the other endpoints "
            f"{percent(rest_rate or 0.0)}",
        ),
    )


# --- rendering ----------------------------------------------------------------------------------


MAX_SIGNAL_LINES = 30
_STATUS_ICONS = {"succeeded": "✅", "rolled_back": "↩️", "failed": "❌", "aborted": "⛔"}


def signal_lines(incident: IncidentRecord) -> list[str]:
    """What the log and alert signals saw in the last looks before the rollback: each line once,
    in the order seen, the latest ``MAX_SIGNAL_LINES``."""
    return incident.signals[-MAX_SIGNAL_LINES:]


def _took(stage: StageRecord) -> str:
    start, end = stage.started_at, stage.finished_at
    return duration(end - start) if start and end else "n/a"


def _looks(stage: StageRecord) -> str:
    return ", ".join(f"{outcome} {n}" for outcome, n in stage.counts.items() if n) or "none"


def stage_rows(record: DeployRecord) -> list[dict[str, str | int]]:
    """The stages as table rows of figures for people (the ``deploy-stages`` artifact): each
    stage's last measured figures, the canary's and the stable's."""
    rows: list[dict[str, str | int]] = []
    for s in record.stages:
        last = s.last
        canary = last.canary if last else None
        stable = last.stable if last else None
        rows.append(
            {
                "stage": s.index + 1,
                "observed": s.observed,
                "verdict": _verdict(s),
                "canary errors": percent(canary.error_rate if canary else None),
                "canary P95": millis(canary.p95_seconds if canary else None),
                "stable errors": percent(stable.error_rate if stable else None),
                "stable P95": millis(stable.p95_seconds if stable else None),
                "canary requests": whole(canary.requests if canary else None),
                "looks": _looks(s),
                "took": _took(s),
            }
        )
    return rows


def _stage_table(record: DeployRecord) -> list[str]:
    rows = stage_rows(record)
    if not rows:
        return []
    lines = [
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
        *("| " + " | ".join(_cell(v) for v in row.values()) + " |" for row in rows),
    ]
    # How a promotion was reached when not on evidence alone (a rule, a person's answer).
    notes = [f"- Stage {s.index + 1}: {s.note}" for s in record.stages if s.note]
    return [*lines, *(["", *notes] if notes else [])]


def _timeline_lines(record: DeployRecord) -> list[str]:
    start = record.started_at
    lines = ["| time (UTC) | after | what happened |", "|---|---|---|"]
    for at, text in timeline(record):
        after = f"+{duration(at - start)}" if at is not None and start is not None else ""
        lines.append(f"| {_clock(at)} | {after} | {_cell(text)} |")
    return lines


def _chart_lines(chart: bytes | None, evidence: ReportEvidence) -> list[str]:
    if chart is not None:
        return [
            "",
            f"![Error rate and P95 of the canary (red) and the stable version (blue)]"
            f"({CHART_NAME})",
        ]
    missing = [
        h.error for h in (evidence.canary, evidence.stable) if h is not None and h.error
    ] or ["no metric points over the deploy"]
    return ["", f"No chart: {'; '.join(missing)}."]


def _breakdown_lines(title: str, breakdown: RequestBreakdown | None) -> list[str]:
    if breakdown is None:
        return []
    if breakdown.error:
        return ["", f"{title}: not available ({breakdown.error})."]
    if not breakdown.rows:
        return ["", f"{title}: no requests recorded."]
    total = sum(r[2] for r in breakdown.rows)
    lines = ["", f"{title}:", "", "| endpoint | status | requests | share |", "|---|---|---|---|"]
    for endpoint, code, count in breakdown.rows[:20]:
        lines.append(
            f"| `{_cell(endpoint)}` | {code} | {whole(count)} | {percent(count / total)} |"
        )
    return lines


def _commit_lines(evidence: ReportEvidence) -> list[str]:
    if evidence.commits is None:
        return []
    lines = ["", f"## Commits released ({evidence.commit_range})", ""]
    if not evidence.commits:
        return [*lines, "No commits between the previous and the released ref."]
    lines += ["| commit | when (UTC) | author | subject |", "|---|---|---|---|"]
    for c in evidence.commits[:30]:
        lines.append(
            f"| `{c.sha[:10]}` | {c.committed_at.strftime('%Y-%m-%d %H:%M')} | "
            f"{_cell(c.author)} | {_cell(c.subject)} |"
        )
    if len(evidence.commits) > 30:
        lines.append(f"\n…and {len(evidence.commits) - 30} older commits.")
    return lines


def _where(incident: IncidentRecord) -> str:
    stage = "n/a" if incident.stage is None else str(incident.stage + 1)
    weight = "n/a" if incident.weight is None else f"{incident.weight}%"
    return f"stage {stage} ({weight} of traffic on the new version)"


def deploy_summary(record: DeployRecord) -> str:
    """The deploy summary of any outcome (the ``deploy-summary`` artifact): the strategy and
    why, the risk table, the checks, the stages' last figures, the flags, the verification and,
    after a rollback, its trigger."""
    icon = _STATUS_ICONS.get(record.status, "•")
    lines = [
        f"# {icon} {record.service} {record.version} → {record.environment}: "
        f"{record.status.replace('_', ' ')}",
        "",
        f"- Strategy: **{record.strategy}**"
        + (f" ({record.strategy_rationale})" if record.strategy_rationale else ""),
        f"- Previous version: {record.previous_version or 'none'}",
        f"- Baseline P95 of the stable version: {millis(record.baseline_p95_seconds)}",
    ]
    if record.switch_seconds is not None:
        lines.append(f"- Blue-green switch: {millis(record.switch_seconds)} to 100% on green")
    if record.dry_run:
        lines.append("- Dry run: nothing was started and no traffic moved")
    if record.message:
        lines += ["", record.message]
    for note in record.reconciled:
        lines += ["", f"Before this deploy: {note}"]
    factors = record.risk.get("factors") or []
    if factors:
        score, level = record.risk.get("score"), record.risk.get("level")
        lines += [
            "",
            f"## Risk: {level} (score {score:g})" if score is not None else "## Risk",
            "",
            "| factor | fact | weight | units | contribution |",
            "|---|---|---|---|---|",
        ]
        for f in factors:
            floor = f" (at least {f['floor']})" if f.get("floor") else ""
            lines.append(
                f"| {f['name']} | {_cell(str(f['fact']))}{floor} | {f['weight']:g} | "
                f"{f['units']:g} | {f['contribution']:g} |"
            )
    if record.checks:
        lines += ["", "## Checks", "", "| step | check | status | detail |", "|---|---|---|---|"]
        for c in record.checks:
            lines.append(f"| {c.step} | {c.name} | {c.status} | {_cell(c.detail)} |")
    if record.stages:
        lines += ["", "## Stages", "", *_stage_table(record)]
    if record.flag_changes:
        lines += ["", "## Feature flags", "", "| flag | users | why |", "|---|---|---|"]
        for flag in record.flag_changes:
            lines.append(f"| {flag.flag} | {flag.percent}% | {_cell(flag.reason)} |")
    if record.verification:
        lines += ["", "## Verification", "", "| check | ok | detail |", "|---|---|---|"]
        for check in record.verification:
            lines.append(
                f"| {check.name} | {'yes' if check.ok else '**no**'} | {_cell(check.detail)} |"
            )
    incident = record.incident
    if incident is not None:
        lines += [
            "",
            "## Rollback",
            "",
            f"Rolled back at {_where(incident)}: {incident.headline}.",
            f"Stable verified healthy afterwards: {'yes' if incident.verified else '**no**'}.",
        ]
        if incident.error:
            lines.append(f"The rollback itself failed: {incident.error}")
    return "\n".join(lines) + "\n"


def incident_report(record: DeployRecord, evidence: ReportEvidence, chart: bytes | None) -> Report:
    """The incident report of a deploy that was rolled back (or whose rollback failed)."""
    incident = record.incident
    if incident is None:
        raise ValueError(f"deploy {record.id} has no incident: nothing rolled back")
    start, end = record.started_at, record.finished_at
    stage = incident.stage
    lines = [
        f"# Incident: {record.service} {record.version} rolled back in {record.environment}",
        "",
        f"- **Trigger**: {incident.headline}"
        + (f", at stage {stage + 1}" if stage is not None else ""),
        f"- **The analysis's figures**: {incident.reason}",
        f"- **Traffic now**: {incident.router_after or 'not known'}",
        f"- **Traffic when it fired**: {incident.traffic_at_trigger or 'not known'}",
        f"- **Restored to**: {record.previous_version or 'nothing'}; verified healthy: "
        + ("yes" if incident.verified else "**NO: investigate now**"),
        f"- **Deploy**: {_clock(start)} to {_clock(end)} UTC"
        + (f" ({duration(end - start)})" if start and end else "")
        + (f", flow run `{record.flow_run_id}`" if record.flow_run_id else ""),
    ]
    if incident.error:
        lines.append(f"- **The rollback itself failed**: {incident.error}")
        if incident.error_detail:
            lines.append(f"  - the error as raised (for engineers): `{incident.error_detail}`")
    lines += _schema_lines(record)
    lines += ["", "## Timeline", "", *_timeline_lines(record)]
    lines += ["", "## Canary and stable over the deploy", *_chart_lines(chart, evidence)]
    stage_table = _stage_table(record)
    if stage_table:
        lines += ["", *stage_table]
    lines += _breakdown_lines("Canary requests by endpoint and status", evidence.breakdown)
    lines += _breakdown_lines("Stable requests by endpoint and status", evidence.stable_breakdown)
    lines += ["", "## Candidate causes", ""]
    causes = candidate_causes(record, evidence)
    if not causes:
        lines.append("Nothing gathered points anywhere in particular; start from the timeline.")
    for n, cause in enumerate(causes, 1):
        lines.append(f"{n}. **{cause.title}**")
        lines += [f"   - {_cell(e)}" for e in cause.evidence]
    lines += ["", "## Canary log around the trigger", ""]
    # Without a log gathered afterwards, the tail the rollback kept.
    log_lines = evidence.log_lines or lines_around(incident.canary_log_tail, trigger_time(record))
    if log_lines:
        lines += ["```", *log_lines, "```"]
    else:
        lines.append("The canary's log has no lines from around the trigger.")
    signals = signal_lines(incident)
    if signals:
        lines += ["", "## What the other signals saw", ""]
        lines += ["Log lines matching the error patterns, and alerts that fired:", ""]
        lines += ["```", *signals, "```"]
    lines += _commit_lines(evidence)
    if incident.verification:
        lines += ["", "## Verification of the restored version", ""]
        lines += [f"- {'✅' if c.ok else '❌'} {c.name}: {c.detail}" for c in incident.verification]
    problems = [*incident.problems, *evidence.problems]
    if problems:
        lines += ["", "## Evidence not gathered", ""] + [f"- {p}" for p in problems]
    lines += [
        "",
        "## Follow-up",
        "",
        "- [ ] Reproduce the failure against the canary build",
        "- [ ] Add a check that would have caught it before traffic",
        "- [ ] Decide whether the rollback thresholds fit this service",
    ]
    return Report("incident", "\n".join(lines) + "\n", chart)


def _schema_lines(record: DeployRecord) -> list[str]:
    """The database schema the release applied, and what became of it."""
    if not record.schema_changes:
        return []
    lines = ["", "## Database schema", ""]
    for change in record.schema_changes:
        lines.append(
            f"- **{change.status}**: {change.before or 'no revision'} → "
            f"{change.after or 'no revision'} (applied with `{change.command}`)"
        )
        if change.detail:
            lines.append(f"  - {change.detail}")
    return lines


def success_summary(record: DeployRecord, evidence: ReportEvidence, chart: bytes | None) -> Report:
    """The summary of a deploy that succeeded: a short table and the chart."""
    start, end = record.started_at, record.finished_at
    last = record.stages[-1].last if record.stages else None
    total = sum((look.canary.requests or 0.0) for s in record.stages if (look := s.last))
    stable = last.stable if last else None
    plan = " → ".join(f"{s.weight}%" for s in record.stages)
    took = (
        f"{duration(end - start)} ({_clock(start)} to {_clock(end)} UTC)" if start and end else ""
    )
    rows = [
        ("Version", f"{record.version} (was {record.previous_version or 'nothing'})"),
        ("Strategy", f"{record.strategy}, {plan}"),
        ("Took", took or "n/a"),
        ("Canary at the last stage", _figures(last.canary) if last else "no data"),
        ("Stable at the last stage", _figures(stable) if stable else "no data"),
        ("Canary requests judged", whole(total)),
    ]
    if evidence.commits is not None:
        rows.append(("Commits released", f"{len(evidence.commits)} ({evidence.commit_range})"))
    lines = [
        f"# ✅ {record.service} {record.version} released to {record.environment}",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {_cell(v)} |" for k, v in rows],
    ]
    lines += ["", "## Canary and stable over the deploy", *_chart_lines(chart, evidence)]
    stage_table = _stage_table(record)
    if stage_table:
        lines += ["", *stage_table]
    lines += ["", "## Timeline", "", *_timeline_lines(record)]
    lines += _commit_lines(evidence)
    if evidence.problems:
        lines += ["", "## Evidence not gathered", ""] + [f"- {p}" for p in evidence.problems]
    return Report("summary", "\n".join(lines) + "\n", chart)


def _figures(figures: Figures) -> str:
    return f"errors {percent(figures.error_rate)}, P95 {millis(figures.p95_seconds)}"


@dataclass(frozen=True)
class ChartRange:
    """The time the chart covers and its resolution."""

    start: datetime
    end: datetime
    step_seconds: float
    markers: list[Marker] = field(default_factory=list)


def chart_range(record: DeployRecord, window_seconds: float, points: int = 120) -> ChartRange:
    """From a little before the first stage (the stable alone, for comparison) to the end."""
    start, end = record.started_at, record.finished_at
    if start is None or end is None:
        raise ValueError("the deploy has not ended: no range to chart")
    first = next((s.started_at for s in record.stages if s.started_at), None) or start
    begin = min(start, first - timedelta(seconds=max(window_seconds, 10.0)))
    span = max((end - begin).total_seconds(), 1.0)
    step = max(1.0, float(round(span / points)))
    return ChartRange(begin, end, step, chart_markers(record))


def kind_of(record: DeployRecord) -> str | None:
    """Which report a deploy gets: ``incident`` after a rollback, ``summary`` after a real
    release, None for the rest (dry runs, refused or no-op deploys)."""
    if record.dry_run:
        return None
    if record.incident is not None:
        return "incident"
    if record.status == "succeeded" and record.stages:
        return "summary"
    return None


def render(
    record: DeployRecord, evidence: ReportEvidence | None = None, chart: bytes | None = None
) -> Report | None:
    """The report ``kind_of`` says the deploy gets (with what ``evidence`` was gathered), or
    None."""
    kind = kind_of(record)
    if kind == "incident":
        return incident_report(record, evidence or ReportEvidence(), chart)
    if kind == "summary":
        return success_summary(record, evidence or ReportEvidence(), chart)
    return None


def chart_title(record: DeployRecord) -> str:
    return (
        f"{record.service} {record.version} (canary) vs "
        f"{record.previous_version or 'stable'} in {record.environment}"
    )
