"""The lint and typecheck checks: a linter or type checker reports no errors.

Both kinds work the same way: run the tool, read its report in the configured format (or only its
exit code), count the problems, and fail on a non-zero exit that comes with problems.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import (
    FIRST_PROBLEMS,
    CheckFunction,
    did_not_finish,
    error_result,
    run_in_checkout,
)
from deployflow.checks.parsers import (
    Problem,
    ReportError,
    parse_eslint_json,
    parse_mypy,
    parse_ruff_json,
    parse_tsc,
)
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import CheckBase, ProblemsCheck

_PROBLEM_PARSERS: dict[str, Callable[[str, str], list[Problem]]] = {
    "eslint-json": lambda text, root: parse_eslint_json(text, root),
    "ruff-json": lambda text, root: parse_ruff_json(text, root),
    "tsc": lambda text, root: parse_tsc(text),
    "mypy": lambda text, root: parse_mypy(text),
}


def _problem_lines(problems: list[Problem]) -> str:
    shown = [str(problem) for problem in problems[:FIRST_PROBLEMS]]
    if len(problems) > FIRST_PROBLEMS:
        shown.append(f"... and {len(problems) - FIRST_PROBLEMS} more")
    return "\n".join(shown)


def _problems_check(kind: str) -> CheckFunction:
    """The check for ``kind``, which differs from the other problem kinds only in its name."""

    def check(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
        assert isinstance(section, ProblemsCheck)
        outcome = run_in_checkout(section, checkout, ctx)
        if (unfinished := did_not_finish(kind, section, outcome)) is not None:
            return unfinished
        details: dict[str, Any] = {"exit_code": outcome.returncode}
        if section.output_format == "exit-code":
            if outcome.succeeded:
                return CheckResult(
                    name=kind,
                    status=CheckStatus.PASSED,
                    figure="exit 0",
                    reason=f"{section.command[0]} exited 0",
                    details=details,
                )
            return CheckResult(
                name=kind,
                status=CheckStatus.FAILED,
                figure=f"exit {outcome.returncode}",
                reason=f"{section.command[0]} exited {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        try:
            problems = _PROBLEM_PARSERS[section.output_format](
                outcome.stdout, str(checkout.resolve())
            )
        except ReportError as exc:
            return error_result(
                kind,
                f"{section.command[0]} exited {outcome.returncode} "
                f"without a readable report: {exc}",
                figure=f"exit {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        errors = sum(1 for problem in problems if problem.severity == "error")
        details.update(
            problems=len(problems),
            errors=errors,
            first=[str(problem) for problem in problems[:FIRST_PROBLEMS]],
        )
        noun = "problem" if len(problems) == 1 else "problems"
        figure = f"{len(problems)} {noun}"
        if outcome.succeeded:
            return CheckResult(
                name=kind,
                status=CheckStatus.PASSED,
                figure=figure,
                reason=f"{section.command[0]} exited 0"
                + (f" ({len(problems)} warnings do not block)" if problems else ""),
                details=details,
            )
        if not problems:
            # Non-zero exit with nothing countable: the tool crashed or was misconfigured.
            return error_result(
                kind,
                f"{section.command[0]} exited {outcome.returncode} but reported no problems; "
                "it probably crashed or was misconfigured",
                figure=f"exit {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        return CheckResult(
            name=kind,
            status=CheckStatus.FAILED,
            figure=figure,
            reason=f"{section.command[0]} found {figure} (exit {outcome.returncode})",
            output_tail=_problem_lines(problems),
            details=details,
        )

    return check


check_lint = _problems_check("lint")
check_typecheck = _problems_check("typecheck")
