"""The tests check: the test command exits 0 and line coverage meets the threshold.

The coverage gate is optional; when configured, the report must have been written by this run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import did_not_finish, error_result, run_in_checkout
from deployflow.checks.parsers import ReportError, parse_coverage
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import CheckBase, TestsCheck

# Filesystem timestamps can trail time.time() by a clock tick; a report older than this margin
# before the command started was left by an earlier run.
STALE_MARGIN_SECONDS = 1.0


def _floor1(value: float) -> float:
    # Round down so 79.96% is never displayed as a passing-looking "80.0%".
    return math.floor(value * 10) / 10


def check_tests(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    """Run the test command, then hold the coverage report (if configured) to its threshold."""
    assert isinstance(section, TestsCheck)
    wall_started = time.time()
    outcome = run_in_checkout(section, checkout, ctx)
    if (unfinished := did_not_finish("tests", section, outcome)) is not None:
        return unfinished
    details: dict[str, Any] = {"exit_code": outcome.returncode}
    coverage_figure = ""
    coverage_problem = ""
    measured = 0.0
    if section.coverage is not None:
        report = checkout / section.coverage.path
        try:
            if report.stat().st_mtime < wall_started - STALE_MARGIN_SECONDS:
                raise ReportError(
                    f"{section.coverage.path} predates this run; the test command did not write it"
                )
            coverage = parse_coverage(
                report.read_text(encoding="utf-8", errors="replace"), section.coverage.format
            )
            measured = coverage.percent
            percent = _floor1(coverage.percent)
            coverage_figure = f"{percent:.1f}% coverage"
            details.update(
                coverage_percent=round(coverage.percent, 2),
                lines_covered=coverage.covered,
                lines_total=coverage.total,
                threshold=section.coverage.threshold,
            )
        except FileNotFoundError:
            coverage_problem = f"coverage report {section.coverage.path} was not written"
        except (OSError, ReportError) as exc:
            coverage_problem = f"coverage report {section.coverage.path} is unusable: {exc}"
    if not outcome.succeeded:
        figure = ", ".join(part for part in (f"exit {outcome.returncode}", coverage_figure) if part)
        return CheckResult(
            name="tests",
            status=CheckStatus.FAILED,
            figure=figure,
            reason=f"the test command failed (exit {outcome.returncode})",
            output_tail=outcome.tail(),
            details=details,
        )
    if section.coverage is None:
        return CheckResult(
            name="tests",
            status=CheckStatus.PASSED,
            figure="exit 0",
            reason="tests passed (no coverage gate configured)",
            details=details,
        )
    if coverage_problem:
        return error_result(
            "tests",
            coverage_problem,
            figure="no coverage",
            output_tail=outcome.tail(),
            details=details,
        )
    threshold = section.coverage.threshold
    percent_text = coverage_figure.split()[0]
    # The exact figure decides: 79.996% is below 80% (it shows as 79.9%), never rounded up to pass.
    if measured < threshold:
        return CheckResult(
            name="tests",
            status=CheckStatus.FAILED,
            figure=coverage_figure,
            reason=f"line coverage {percent_text} is below the {threshold:g}% threshold",
            output_tail=outcome.tail(),
            details=details,
        )
    return CheckResult(
        name="tests",
        status=CheckStatus.PASSED,
        figure=coverage_figure,
        reason=f"tests passed with coverage at or above {threshold:g}%",
        details=details,
    )
