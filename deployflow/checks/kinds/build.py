"""The build check: the build command exits 0."""

from __future__ import annotations

from pathlib import Path

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import did_not_finish, run_in_checkout
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import BuildCheck, CheckBase


def check_build(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    """Run the build command; its exit code is the verdict."""
    assert isinstance(section, BuildCheck)
    outcome = run_in_checkout(section, checkout, ctx)
    if (unfinished := did_not_finish("build", section, outcome)) is not None:
        return unfinished
    details = {"exit_code": outcome.returncode}
    if outcome.succeeded:
        return CheckResult(
            name="build",
            status=CheckStatus.PASSED,
            figure="exit 0",
            reason="the build succeeded",
            details=details,
        )
    return CheckResult(
        name="build",
        status=CheckStatus.FAILED,
        figure=f"exit {outcome.returncode}",
        reason=f"the build command failed (exit {outcome.returncode})",
        output_tail=outcome.tail(),
        details=details,
    )
