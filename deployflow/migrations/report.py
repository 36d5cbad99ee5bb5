"""The result of a migration check: findings per revision, staging, impact, and renderings."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from deployflow.migrations.rules import RULES, Severity
from deployflow.schema import RevisionClass, SchemaRange


@dataclass(frozen=True)
class Finding:
    """A rule that fired, with everything a reviewer needs to act on it."""

    rule_id: str
    severity: Severity
    message: str
    operation: str | None = None
    table: str | None = None
    line: int | None = None
    sql: str | None = None
    suppressed_reason: str | None = None

    @property
    def counts(self) -> bool:
        """True when the finding is not suppressed."""
        return self.suppressed_reason is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        rule = RULES[self.rule_id]
        return {
            "rule_id": self.rule_id,
            "severity": self.severity,
            "title": rule.title,
            "message": self.message,
            "operation": self.operation,
            "table": self.table,
            "line": self.line,
            "sql": self.sql,
            "why": rule.why,
            "safe_alternative": rule.safe_alternative,
            "suppressed": (
                {"reason": self.suppressed_reason} if self.suppressed_reason is not None else None
            ),
        }


@dataclass
class RevisionReport:
    """Findings and classification of one revision."""

    revision: str
    down_revisions: tuple[str, ...]
    path: str
    message: str
    compatibility: str  # "expand" or "contract"
    compatibility_reasons: list[str]
    deploy_order: str
    reversibility: str  # reversible, irreversible, missing, empty, records nothing, unknown
    unreadable: str | None  # why the revision could not be read (None when it was)
    operations: list[dict[str, Any]]
    findings: list[Finding] = field(default_factory=list)
    output: str = ""  # what the revision printed while captured (kept out of the report's stream)
    seconds: float = 0.0
    read_via: str | None = None  # set when upgrade() was rendered through env.py, not called
    # Can the version before the release run with it applied: runs, breaks or unknown.
    old_version: str = "unknown"
    old_version_reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "revision": self.revision,
            "down_revisions": list(self.down_revisions),
            "path": self.path,
            "message": self.message,
            "compatibility": {
                "class": self.compatibility,
                "reasons": self.compatibility_reasons,
                "deploy_order": self.deploy_order,
            },
            "reversibility": self.reversibility,
            "old_version": self.old_version,
            "unreadable": self.unreadable,
            "read_via": self.read_via,
            "output": self.output,
            "seconds": round(self.seconds, 4),
            "operations": self.operations,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass
class StagingLeg:
    """One leg of the round trip (upgrade, downgrade, upgrade again)."""

    name: str
    target: str
    seconds: float
    ok: bool
    error: str | None = None
    failed_revision: str | None = None
    sql: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "target": self.target,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "error": self.error,
            "failed_revision": self.failed_revision,
            "sql": self.sql,
        }


@dataclass
class StagingResult:
    """The round trip on a staging database (the URL is shown without its password)."""

    url: str
    backend: str
    starting_revision: str | None
    legs: list[StagingLeg] = field(default_factory=list)
    error: str | None = None
    interpreter: str | None = None  # the service's interpreter it ran in (None: deployflow's)

    @property
    def ok(self) -> bool:
        """True when every leg succeeded."""
        return self.error is None and all(leg.ok for leg in self.legs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "url": self.url,
            "backend": self.backend,
            "starting_revision": self.starting_revision,
            "ok": self.ok,
            "error": self.error,
            "interpreter": self.interpreter,
            "legs": [leg.to_dict() for leg in self.legs],
        }


@dataclass(frozen=True)
class TableSize:
    """Estimated size of a table a risky operation touches."""

    table: str
    rows: int | None
    bytes: int | None
    large: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"table": self.table, "rows": self.rows, "bytes": self.bytes, "large": self.large}


@dataclass
class ImpactResult:
    """Table sizes and the downtime decision."""

    tables: list[TableSize]
    downtime_required: bool
    reasons: list[str]
    window: dict[str, str] | None = None

    @property
    def approved(self) -> bool:
        """True when downtime is required and an approved window covers now."""
        return self.downtime_required and self.window is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "tables": [t.to_dict() for t in self.tables],
            "downtime_required": self.downtime_required,
            "reasons": self.reasons,
            "approved_window": self.window,
        }


@dataclass
class MigrationReport:
    """Everything ``check_migrations`` found; ``blocking`` says whether the deploy must stop."""

    alembic_dir: str
    from_revision: str | None
    to_revision: str | None
    heads: list[str]
    graph_findings: list[Finding]
    revisions: list[RevisionReport]
    staging: StagingResult | None = None
    impact: ImpactResult | None = None
    # What read the revisions: {"interpreter", "python", "sqlalchemy", "alembic", "sys_path"}.
    read_with: dict[str, str] = field(default_factory=dict)

    def schema_range(self) -> SchemaRange:
        """The range as a release applies it (``deployflow.schema``)."""
        leg = next((x for x in self.staging.legs if x.name == "downgrade"), None) if (
            self.staging
        ) else None  # fmt: skip
        return SchemaRange(
            self.from_revision,
            self.to_revision,
            tuple(
                RevisionClass(
                    r.revision,
                    r.old_version if r.old_version in ("runs", "breaks") else "unknown",  # type: ignore[arg-type]
                    r.reversibility,
                    tuple(r.old_version_reasons),
                )
                for r in self.revisions
            ),
            leg.ok if leg is not None else None,
        )

    def all_findings(self) -> list[Finding]:
        """Graph findings followed by every revision's findings."""
        return [*self.graph_findings, *(f for r in self.revisions for f in r.findings)]

    def _count(self, severity: str) -> int:
        return sum(1 for f in self.all_findings() if f.counts and f.severity == severity)

    @property
    def blocking_reasons(self) -> list[str]:
        """Why the deploy must stop (empty when it may go on)."""
        reasons = []
        errors = self._count("error")
        if errors:
            reasons.append(f"{errors} error-level finding(s)")
        if self.staging is not None and not self.staging.ok:
            reasons.append("the staging round trip failed")
        if self.impact is not None and self.impact.downtime_required and not self.impact.approved:
            reasons.append("downtime required and no approved downtime window covers now")
        return reasons

    @property
    def blocking(self) -> bool:
        """True when the deploy must stop before any traffic moves."""
        return bool(self.blocking_reasons)

    @property
    def exit_code(self) -> int:
        """0 when safe, 1 when the deploy must stop."""
        return 1 if self.blocking else 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the report."""
        return {
            "alembic_dir": self.alembic_dir,
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "heads": self.heads,
            "read_with": self.read_with,
            "blocking": self.blocking,
            "blocking_reasons": self.blocking_reasons,
            "exit_code": self.exit_code,
            "summary": {
                "revisions": len(self.revisions),
                "errors": self._count("error"),
                "warnings": self._count("warning"),
                "suppressed": sum(1 for f in self.all_findings() if not f.counts),
                "unreadable": [r.revision for r in self.revisions if r.unreadable],
            },
            "graph": [f.to_dict() for f in self.graph_findings],
            "revisions": [r.to_dict() for r in self.revisions],
            "staging": self.staging.to_dict() if self.staging else None,
            "impact": self.impact.to_dict() if self.impact else None,
        }

    def to_json(self) -> str:
        """``to_dict`` as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def _summary_lines(self) -> list[str]:
        verdict = "BLOCKED" if self.blocking else "SAFE"
        span = f"{self.from_revision or 'base'} -> {self.to_revision or 'head'}"
        lines = [
            f"Migrations {verdict}: {len(self.revisions)} revision(s) {span}; "
            f"{self._count('error')} error(s), {self._count('warning')} warning(s), "
            f"{sum(1 for f in self.all_findings() if not f.counts)} suppressed.",
        ]
        lines += [f"Blocked because {reason}." for reason in self.blocking_reasons]
        if self.impact and self.impact.downtime_required:
            lines.append("Downtime required: " + "; ".join(self.impact.reasons))
            if self.impact.window:
                lines.append(
                    f"Approved window {self.impact.window['start']} to {self.impact.window['end']}"
                    f" ({self.impact.window['reason']}, approved by "
                    f"{self.impact.window['approved_by']})."
                )
        if self.staging:
            state = "passed" if self.staging.ok else "FAILED"
            legs = ", ".join(f"{leg.name} {leg.seconds:.2f}s" for leg in self.staging.legs)
            lines.append(f"Staging round trip on {self.staging.backend} {state}: {legs}.")
            lines += _staging_errors(self.staging)
        return lines

    def to_markdown(self) -> str:
        """The deploy artifact: summary first, then each revision's findings with why and fix."""
        out = ["# Migration check", ""]
        out += [
            f"**{line}**" if i == 0 else f"- {line}" for i, line in enumerate(self._summary_lines())
        ]
        if self.graph_findings:
            out += ["", "## Revision graph", ""]
            out += [_markdown_finding(f) for f in self.graph_findings]
        if self.impact and self.impact.tables:
            out += ["", "## Table sizes (staging)", "", "| table | rows | bytes | large |",
                    "|---|---|---|---|"]  # fmt: skip
            out += [
                f"| {t.table} | {_fmt(t.rows)} | {_fmt(t.bytes)} | {'yes' if t.large else 'no'} |"
                for t in self.impact.tables
            ]
        for rev in self.revisions:
            out += ["", f"## {rev.revision}: {rev.message or '(no message)'}", ""]
            out.append(
                f"- Compatibility: **{rev.compatibility}**"
                + (
                    f" ({'; '.join(rev.compatibility_reasons)})"
                    if rev.compatibility_reasons
                    else ""
                )
            )
            out.append(f"- Deploy order: {rev.deploy_order}")
            out.append(f"- Reversibility: {rev.reversibility}")
            if rev.unreadable:
                out.append(f"- Could not be read: {rev.unreadable}")
            if not rev.findings:
                out.append("- No findings.")
            out += ["", *(_markdown_finding(f) for f in rev.findings)]
        return "\n".join(out).rstrip() + "\n"

    def to_text(self) -> str:
        """Plain text for the terminal."""
        out = self._summary_lines()
        for finding in self.graph_findings:
            out.append(_text_finding("graph", finding))
        for rev in self.revisions:
            out.append(
                f"\n{rev.revision} ({rev.path}): {rev.compatibility}, {rev.reversibility}"
                + (f", could not be read: {rev.unreadable}" if rev.unreadable else "")
                + (f", read through {rev.read_via}" if rev.read_via else "")
            )
            out.append(f"  deploy order: {rev.deploy_order}")
            out += [_text_finding(rev.revision, f) for f in rev.findings]
        return "\n".join(out) + "\n"


def _fmt(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _staging_errors(staging: StagingResult) -> list[str]:
    lines = []
    if staging.error:
        lines.append(f"Staging error: {staging.error}")
    for leg in staging.legs:
        if not leg.ok:
            lines.append(
                f"Staging {leg.name} failed at revision {leg.failed_revision or '?'}: {leg.error}"
                + (f" (SQL: {leg.sql})" if leg.sql else "")
            )
    return lines


def _markdown_finding(finding: Finding) -> str:
    rule = RULES[finding.rule_id]
    where = f" line {finding.line}" if finding.line else ""
    head = f"- **{finding.severity}** `{finding.rule_id}`{where}: {finding.message}"
    if finding.suppressed_reason is not None:
        head = f"- ~~{finding.severity}~~ suppressed `{finding.rule_id}`{where}: {finding.message}"
        head += f"  \n  Allowed because: {finding.suppressed_reason}"
    sql = f"  \n  SQL: `{finding.sql.splitlines()[0][:200]}`" if finding.sql else ""
    return f"{head}{sql}  \n  Why: {rule.why}  \n  Safe alternative: {rule.safe_alternative}"


def _text_finding(where: str, finding: Finding) -> str:
    rule = RULES[finding.rule_id]
    line = f":{finding.line}" if finding.line else ""
    state = f"suppressed ({finding.suppressed_reason})" if not finding.counts else finding.severity
    return (
        f"  [{state}] {finding.rule_id} {where}{line}: {finding.message}\n"
        f"      why: {rule.why}\n      instead: {rule.safe_alternative}"
    )
