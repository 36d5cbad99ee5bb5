"""``check_migrations``: graph, offline capture, rules, reversibility, staging and impact."""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployflow.migrations.capture import (
    Capture,
    CaptureRunner,
    RevisionCapture,
    SubprocessCapture,
    capture_runner,
)
from deployflow.migrations.graph import (
    GraphProblem,
    MigrationInputError,
    RevisionGraph,
    alembic_ini,
    application_sys_path,
    load_graph,
    project_root,
    resolve,
    version_locations,
)
from deployflow.migrations.lint import LintState, RawFinding, lint_operations
from deployflow.migrations.operations import Operation
from deployflow.migrations.report import (
    Finding,
    ImpactResult,
    MigrationReport,
    RevisionReport,
    StagingResult,
    TableSize,
)
from deployflow.migrations.rules import RULES
from deployflow.migrations.source import RevisionSource
from deployflow.migrations.spec import MigrationsSpec
from deployflow.migrations.staging import (
    measure_tables,
    read_deployed_revision,
    round_trip,
    safe_url,
)

_CONTRACT_RULES = {
    "drop-column": "drops a column",
    "drop-table": "drops a table",
    "rename-column": "renames a column",
    "rename-table": "renames a table",
    "add-column-not-null-without-default": "adds a NOT NULL column without default",
    "set-not-null": "makes a column NOT NULL",
    "alter-column-type": "changes a column type",
    "not-null-default-dropped": "drops the server default the old code inserts with",
}


def check_migrations(
    alembic_dir: Path,
    *,
    from_rev: str | None,
    to_rev: str | None = None,
    settings: MigrationsSpec | None = None,
    staging_url: str | None = None,
    now: datetime | None = None,
    python: str | None = None,
    revision_timeout: float | None = None,
    sys_path: list[str] | None = None,
) -> MigrationReport:
    """Check the revisions after ``from_rev`` up to ``to_rev`` (default: the head).

    Args:
        alembic_dir: the Alembic directory (holding env.py and versions/).
        from_rev: the deployed revision; None falls back to ``settings.from_revision``, then to
            the target's alembic_version through ``settings.database_url``, then to the base.
            ``"base"`` means every revision.
        to_rev: the revision to deploy; None means ``settings.to_revision`` or the single head.
        settings: the spec's ``migrations:`` section (rule overrides, sizes, windows).
        staging_url: overrides ``settings.staging_url``; enables the round trip and the impact.
        now: the time compared with downtime windows (default: the current time).
        python: overrides ``settings.python``: the interpreter whose worker process captures
            the revisions (None: in deployflow's own process).
        revision_timeout: overrides ``settings.revision_timeout`` (seconds per revision).
        sys_path: overrides ``settings.sys_path`` (where the application is importable from).

    Returns:
        The report; ``report.blocking`` tells whether the deploy must stop.

    Raises:
        MigrationInputError: the directory holds no revisions, a revision is unknown, or
            ``settings.unreadable`` names a revision that is not in the directory.
    """
    spec = settings or MigrationsSpec(path=alembic_dir)
    graph = load_graph(alembic_dir)
    if from_rev is None:
        from_rev = spec.from_revision
        if from_rev is None and spec.database_url is not None:
            from_rev = read_deployed_revision(spec.database_url)
    start = None if from_rev in (None, "base") else resolve(graph, str(from_rev), "--from")
    requested_to = to_rev or spec.to_revision
    heads = graph.heads()
    to_revs = [resolve(graph, requested_to, "--to")] if requested_to else heads
    graph_findings = _graph_findings(graph, start, to_revs, spec)
    order = graph.ordered_range(start, to_revs)
    unknown = sorted(
        key for key in spec.unreadable if key not in graph.revisions and key not in graph.unreadable
    )
    if unknown:
        raise MigrationInputError(
            "migrations.unreadable",
            f"{', '.join(unknown)} is not a revision id (or unreadable file) of {alembic_dir}",
        )
    env_sets_lock_timeout = _env_sets_lock_timeout(alembic_dir)
    state = LintState()
    root = project_root(alembic_dir)
    ini = alembic_ini(alembic_dir)
    search = [root, *([ini.parent.resolve()] if ini else [])]
    argument = "--python" if python else "migrations.python"
    interpreter = resolve_interpreter(python, "--python", search) or resolve_interpreter(
        spec.python, "migrations.python", search
    )
    sys_path = application_sys_path(
        alembic_dir, root, sys_path or spec.sys_path,
        "--sys-path" if sys_path else "migrations.sys_path",
    )  # fmt: skip
    runner = capture_runner(
        interpreter, timeout=revision_timeout or spec.revision_timeout,
        sys_path=sys_path, cwd=root, env=env_fallback(alembic_dir, graph),
    )  # fmt: skip
    if isinstance(runner, SubprocessCapture) and order:
        why = runner.probe()
        if why is not None:
            runner.close()
            raise MigrationInputError(
                argument,
                f"{interpreter} cannot run the capture: {why}. It needs Python 3.9 or later "
                "with Alembic and SQLAlchemy 1.3 or later installed (the service's own "
                "environment, e.g. .venv/bin/python)",
            )
    try:
        revisions = [
            _check_revision(graph.revisions[rev], state, spec, env_sets_lock_timeout, runner)
            for rev in order
        ]
    finally:
        runner.close()
    report = MigrationReport(
        alembic_dir=str(alembic_dir), from_revision=start,
        to_revision=to_revs[0] if len(to_revs) == 1 else None, heads=heads,
        graph_findings=graph_findings, revisions=revisions,
        read_with={"interpreter": interpreter or sys.executable, **runner.environment,
                   "sys_path": os.pathsep.join(sys_path)},
    )  # fmt: skip
    url = staging_url or (spec.staging_url.get_secret_value() if spec.staging_url else None)
    if url and runner.abandoned:
        # A revision is still blocked in this process, possibly holding Alembic's lock.
        report.staging = StagingResult(
            safe_url(url), "unknown", None,
            error="not run: a revision is still blocked in deployflow's process (see "
            "revision-unreadable); use --python to capture in a separate process",
        )  # fmt: skip
    elif url:
        impact_ops = _impact_operations(revisions)
        report.impact = _impact(url, impact_ops, spec, now or datetime.now(UTC))
        if len(to_revs) == 1 and not any(f.counts for f in graph_findings):
            report.staging = round_trip(
                alembic_dir, url, from_rev=start, to_rev=to_revs[0],
                lock_timeout=spec.lock_timeout, python=interpreter, sys_path=sys_path, cwd=root,
            )  # fmt: skip
            apply_staging(report, order)
    return report


def _graph_findings(
    graph: RevisionGraph, start: str | None, to_revs: list[str], spec: MigrationsSpec
) -> list[Finding]:
    found = [
        _finding(spec, problem.rule_id, problem.message, None, _graph_suppression(problem, spec))
        for problem in graph.problems()
    ]
    if start is not None and not any(start in graph.ancestors(to) for to in to_revs):
        found.append(
            _finding(
                spec, "graph-not-ancestor",
                f"deployed revision {start} is not an ancestor of {', '.join(to_revs)}", None,
            )
        )  # fmt: skip
    return [f for f in found if f is not None]


def _env_sets_lock_timeout(alembic_dir: Path) -> bool:
    env = alembic_dir / "env.py"
    try:
        return "lock_timeout" in env.read_text(encoding="utf-8")
    except OSError:
        return False


def _finding(
    spec: MigrationsSpec,
    rule_id: str,
    message: str,
    op: Operation | None,
    suppressed: str | None = None,
) -> Finding | None:
    setting = spec.rules.get(rule_id, RULES[rule_id].severity)
    if setting == "off":
        return None
    return Finding(
        rule_id, setting, message,
        operation=op.describe() if op else None, table=op.table if op else None,
        line=op.line if op else None, sql=(op.sql or None) if op else None,
        suppressed_reason=suppressed,
    )  # fmt: skip


def _apply_suppressions(
    source: RevisionSource, raw: list[RawFinding], spec: MigrationsSpec
) -> list[Finding]:
    result: list[Finding] = []
    reasonless_reported: set[int] = set()
    accepted_unread = spec.unreadable.get(source.revision) or spec.unreadable.get(source.path.name)
    for item in raw:
        line = item.operation.line if item.operation else None
        matching = [s for s in source.suppressions_for(line) if s.rule_id == item.rule_id]
        with_reason = [s for s in matching if s.reason]
        reason = with_reason[0].reason if with_reason else None
        if reason is None and item.rule_id == "revision-unreadable" and accepted_unread:
            reason = f"{accepted_unread} (migrations.unreadable)"
        found = _finding(spec, item.rule_id, item.message, item.operation, reason)
        if found:
            result.append(found)
        for sup in matching:
            if not sup.reason and sup.line not in reasonless_reported:
                reasonless_reported.add(sup.line)
                extra = _finding(
                    spec, "suppression-without-reason",
                    f"line {sup.line}: allow {sup.rule_id} has no `-- reason`, so it is ignored",
                    None,
                )  # fmt: skip
                if extra:
                    result.append(extra)
    for sup in source.suppressions:
        if sup.rule_id not in RULES:
            extra = _finding(
                spec, "suppression-unknown-rule",
                f"line {sup.line}: unknown rule {sup.rule_id!r}", None,
            )  # fmt: skip
            if extra:
                result.append(extra)
    return result


def resolve_interpreter(python: str | None, argument: str, search: list[Path]) -> str | None:
    """``python`` as an executable path: a bare name is looked up on PATH, a relative path is
    taken from the checkout root, else from the folder of alembic.ini (``search``)."""
    if not python:
        return None
    found: str | None = None
    if os.sep in python:
        for folder in [Path("/")] if Path(python).is_absolute() else search:
            path = folder / python
            if path.is_file() and os.access(path, os.X_OK):
                # Not resolved: a venv's python is a symlink whose own path selects the venv.
                found = os.path.normpath(path)
                break
    else:
        found = shutil.which(python)
    if found is None:
        raise MigrationInputError(
            argument,
            f"{python!r} is not an executable interpreter "
            f"(relative paths are taken from {' or '.join(map(str, search))})",
        )
    return found


def env_fallback(alembic_dir: Path, graph: RevisionGraph) -> dict[str, Any] | None:
    """What the capture needs to render a revision through the project's env.py (None when
    the project has no env.py)."""
    if not (alembic_dir / "env.py").is_file():
        return None
    ini = alembic_ini(alembic_dir)
    return {
        "alembic_dir": str(alembic_dir.resolve()), "ini": str(ini) if ini else None,
        "version_locations": [str(p.resolve()) for p in version_locations(alembic_dir)],
        "revisions": {
            str(source.path.resolve()): (rev, source.down_revisions)
            for rev, source in graph.revisions.items()
        },
    }  # fmt: skip


def _graph_suppression(problem: GraphProblem, spec: MigrationsSpec) -> str | None:
    if problem.rule_id == "revision-unreadable" and problem.revision in spec.unreadable:
        return spec.unreadable[problem.revision]
    return None


def _check_revision(
    source: RevisionSource,
    state: LintState,
    spec: MigrationsSpec,
    env_sets_lock_timeout: bool,
    runner: CaptureRunner,
) -> RevisionReport:
    raw: list[RawFinding] = []
    captured: RevisionCapture = runner.capture(source.path, ["upgrade", "downgrade"])
    upgrade = captured.get("upgrade")
    downgrade = captured.get("downgrade") if source.downgrade == "ok" else Capture()
    unreadable = captured.failure
    if unreadable is None and captured.network:
        unreadable = (
            f"it tried to reach the network while read ({'; '.join(captured.network[:3])}), "
            "refused: revisions are read without network, so what it does with a connection "
            "was not seen"
        )
    if unreadable is None and upgrade.error:
        unreadable = f"upgrade() could not run offline ({upgrade.error})"
    if unreadable:
        raw.append(
            RawFinding(
                "revision-unreadable",
                f"{unreadable}; its operations"
                + (" after that point" if upgrade.operations else "")
                + " were not checked",
            )
        )
    raw += lint_operations(
        upgrade.operations, state=state, env_sets_lock_timeout=env_sets_lock_timeout,
        max_lock_timeout=spec.max_lock_timeout,
    )  # fmt: skip
    reversibility = _reversibility(source, unreadable, upgrade, downgrade, raw, spec)
    findings = _apply_suppressions(source, raw, spec)
    compatibility_reasons = sorted(
        {_CONTRACT_RULES[f.rule_id] for f in findings if f.rule_id in _CONTRACT_RULES}
    )
    breaking = sorted(
        {_CONTRACT_RULES[f.rule_id] for f in findings if f.rule_id in _CONTRACT_RULES and f.counts}
    )
    # Suppressed contract findings carry a reviewer's reason (the old code no longer uses it).
    old_version = "unknown" if unreadable else ("breaks" if breaking else "runs")
    if unreadable:
        # Nothing is claimed about a revision that was not fully read, accepted or not.
        compatibility = "unknown"
        order = (
            "Unknown: the revision was not fully read, so whether the running code keeps "
            "working with it was not checked. Review it by hand before deploying it beside the "
            "old version."
        )
    elif compatibility_reasons:
        compatibility = "contract"
        order = (
            "Deploy code that no longer depends on what this revision removes or tightens "
            "first; apply this migration in a later deploy (after every old instance is gone)."
        )
    else:
        compatibility = "expand"
        order = "Apply this migration before the new code; the running code keeps working."
    return RevisionReport(
        revision=source.revision, down_revisions=source.down_revisions,
        path=source.path.name,
        message=source.message, compatibility=compatibility,
        compatibility_reasons=compatibility_reasons, deploy_order=order,
        reversibility=reversibility, unreadable=unreadable, old_version=old_version,
        old_version_reasons=breaking,
        operations=[
            {"kind": op.kind, "table": op.table, "column": op.column, "line": op.line,
             "in_transaction": op.in_transaction, "sql": op.sql}
            for op in upgrade.operations
        ],
        findings=findings, output=captured.output, seconds=captured.seconds,
        read_via=(
            f"{upgrade.via}, as calling upgrade() failed: {upgrade.direct_error}"
            if upgrade.via else None
        ),
    )  # fmt: skip


def _reversibility(
    source: RevisionSource,
    unreadable: str | None,
    upgrade: Capture,
    downgrade: Capture,
    raw: list[RawFinding],
    spec: MigrationsSpec,
) -> str:
    """What the downgrade is known to do. Only a downgrade that refuses on purpose (a ``raise``
    written in it) is irreversible here; one that merely cannot run offline is unknown until
    the staging round trip says otherwise (``apply_staging``)."""
    if unreadable:
        # Nothing is known about a revision that could not be read: never call it reversible,
        # and its acceptance (if any) covers the whole revision, downgrade included.
        return "unknown (the revision could not be read)"
    shape = source.downgrade
    if shape in ("empty", "ok") and not upgrade.operations and not upgrade.error:
        # A merge revision (or any revision that changes nothing) has nothing to undo.
        return "reversible (nothing to undo)"
    if shape == "missing":
        raw.append(RawFinding("downgrade-missing", "the revision defines no downgrade()"))
        return "missing"
    if shape == "empty":
        raw.append(RawFinding("downgrade-empty", "downgrade() only contains pass/docstring/..."))
        return "empty"
    intended = (
        shape == "irreversible"
        or downgrade.error_type == "NotImplementedError"
        or (downgrade.error is not None and downgrade.on_purpose)
    )
    if intended and spec.allow_irreversible:
        return "irreversible (allowed by the spec)"
    if intended:
        what = downgrade.error or "downgrade() raises NotImplementedError"
        raw.append(RawFinding("downgrade-irreversible", f"downgrade() refuses: {what}"))
        return "irreversible"
    if downgrade.error:
        return f"unknown (downgrade() could not run offline: {downgrade.error})"
    if not downgrade.operations and upgrade.operations:
        raw.append(RawFinding("downgrade-records-nothing", "downgrade() emitted no operation"))
        return "records nothing"
    return "reversible"


def apply_staging(report: MigrationReport, order: list[str]) -> None:
    """What the staging round trip showed overrides what was read offline: a revision the
    downgrade leg undid is reversible (an offline-only failure was no refusal), the one it
    failed on is irreversible."""
    staging = report.staging
    leg = next((leg for leg in staging.legs if leg.name == "downgrade"), None) if staging else None
    if leg is None:
        return
    by_rev = {r.revision: r for r in report.revisions}
    for rev in reversed(order):
        revision = by_rev.get(rev)
        if revision is None:
            continue
        if not leg.ok and rev == leg.failed_revision:
            revision.reversibility = f"irreversible (its downgrade failed on staging: {leg.error})"
            return
        if not leg.ok and leg.failed_revision is None:
            return  # where it failed is not known: nothing is claimed
        if revision.unreadable is None and not revision.reversibility.startswith("reversible"):
            revision.reversibility = "reversible (its downgrade passed on staging)"
            revision.findings = [
                f for f in revision.findings if f.rule_id != "downgrade-irreversible"
            ]


def _impact_operations(revisions: list[RevisionReport]) -> list[tuple[Finding, str]]:
    """(finding, table) for every finding whose rule blocks, scans or rewrites a table."""
    result = []
    for rev in revisions:
        for finding in rev.findings:
            if RULES[finding.rule_id].effect and finding.table:
                result.append((finding, finding.table))
    return result


def _impact(
    url: str, items: list[tuple[Finding, str]], spec: MigrationsSpec, now: datetime
) -> ImpactResult:
    sizes = measure_tables(url, [table for _, table in items], row_limit=spec.large_table_rows)
    tables = []
    for table, (rows, size) in sorted(sizes.items()):
        large = (rows is not None and rows >= spec.large_table_rows) or (
            size is not None and size >= spec.large_table_bytes
        )
        tables.append(TableSize(table, rows, size, large))
    large_tables = {t.table: t for t in tables if t.large}
    reasons = []
    for finding, table in items:
        if table in large_tables:
            t = large_tables[table]
            reasons.append(
                f"{finding.rule_id} on {table} ({_size_text(t)}): {RULES[finding.rule_id].effect}"
            )
    window = None
    if reasons:
        for candidate in spec.downtime_windows:
            if candidate.start <= now <= candidate.end:
                window = {
                    "start": candidate.start.isoformat(), "end": candidate.end.isoformat(),
                    "reason": candidate.reason, "approved_by": candidate.approved_by,
                }  # fmt: skip
                break
    return ImpactResult(tables, bool(reasons), reasons, window)


def _size_text(table: TableSize) -> str:
    parts = []
    if table.rows is not None:
        parts.append(f"~{table.rows:,} rows")
    if table.bytes is not None:
        parts.append(f"{table.bytes:,} bytes")
    return ", ".join(parts) or "size unknown"
