"""The audit check: npm audit or pip-audit finds no vulnerability at or above the threshold.

A dependency the tool could not audit (advisory source unreachable) is an error, not a pass,
unless the spec allows it by name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import (
    FIRST_PROBLEMS,
    did_not_finish,
    error_result,
    run_in_checkout,
)
from deployflow.checks.parsers import AuditFindings, ReportError, parse_npm_audit, parse_pip_audit
from deployflow.checks.process import output_tail
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import AuditCheck, CheckBase


def _normalised_package_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def check_audit(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    """Run the audit tool and weigh its findings against the severity threshold."""
    assert isinstance(section, AuditCheck)
    outcome = run_in_checkout(section, checkout, ctx)
    if (unfinished := did_not_finish("audit", section, outcome)) is not None:
        return unfinished
    tool = "npm audit" if section.tool == "npm" else "pip-audit"
    details: dict[str, Any] = {"exit_code": outcome.returncode, "tool": section.tool}
    try:
        findings: AuditFindings = (
            parse_npm_audit(outcome.stdout)
            if section.tool == "npm"
            else parse_pip_audit(outcome.stdout)
        )
    except ReportError as exc:
        last = output_tail(outcome.stderr, lines=1)
        return error_result(
            "audit",
            f"{tool} gave no usable report (exit {outcome.returncode}): {exc}"
            + (f"; last message: {last}" if last else ""),
            figure="no report",
            output_tail=outcome.tail(),
            details=details,
        )
    allowed = {_normalised_package_name(name) for name in section.allow_unaudited}
    unaudited = {
        name: why
        for name, why in findings.skipped.items()
        if _normalised_package_name(name) not in allowed
    }
    blocking = [vuln for vuln in findings.vulnerabilities if vuln.at_or_above(section.severity)]
    details.update(
        vulnerabilities=[str(vuln) for vuln in findings.vulnerabilities],
        at_or_above_threshold=len(blocking),
        severity=section.severity,
        audited=findings.audited,
        unaudited=unaudited,
    )
    if unaudited:
        names = ", ".join(sorted(unaudited)[:5])
        return error_result(
            "audit",
            f"{tool} could not audit {len(unaudited)} dependencies ({names}); the advisory source "
            "was probably unreachable, so no verdict",
            figure=f"{len(unaudited)} not audited",
            output_tail="\n".join(f"{name}: {why}" for name, why in unaudited.items()),
            details=details,
        )
    if findings.audited == 0 and not findings.vulnerabilities:
        return error_result(
            "audit",
            f"{tool} examined no dependencies, so it has no verdict; point it at the project's "
            "dependencies (a project without any can drop the audit check)",
            figure="0 audited",
            output_tail=outcome.tail(),
            details=details,
        )
    if blocking:
        noun = "vulnerability" if len(blocking) == 1 else "vulnerabilities"
        return CheckResult(
            name="audit",
            status=CheckStatus.FAILED,
            figure=f"{len(blocking)} {noun} >= {section.severity}",
            reason=f"{tool} found {len(blocking)} {noun} at or above {section.severity}",
            output_tail="\n".join(str(vuln) for vuln in blocking[:FIRST_PROBLEMS]),
            details=details,
        )
    if outcome.returncode != 0 and not findings.vulnerabilities:
        return error_result(
            "audit",
            f"{tool} exited {outcome.returncode} yet reported nothing; refusing to call that clean",
            figure=f"exit {outcome.returncode}",
            output_tail=outcome.tail(),
            details=details,
        )
    below = len(findings.vulnerabilities)
    return CheckResult(
        name="audit",
        status=CheckStatus.PASSED,
        figure=f"0 >= {section.severity}" + (f" ({below} below)" if below else ""),
        reason=f"no vulnerabilities at or above {section.severity}",
        details=details,
    )
