"""Run the pre-deployment checks: one at a time (one Prefect task each) or all concurrently.

This module dispatches: ``CHECKS_BY_KIND`` maps each kind to its check in
``deployflow.checks.kinds``, and ``run_check`` applies what holds for every kind (skips, timing,
advisory checks, turning exceptions into results).

A check never raises: whatever goes wrong becomes a ``CheckResult`` with status error, because a
check that cannot tell is a reason to stop the deploy, not a crash of the step.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.audit import check_audit
from deployflow.checks.kinds.build import check_build
from deployflow.checks.kinds.changelog import check_changelog
from deployflow.checks.kinds.common import CheckFunction, error_result, resolve_commit
from deployflow.checks.kinds.problems import check_lint, check_typecheck
from deployflow.checks.kinds.review_gate import check_review
from deployflow.checks.kinds.tests import check_tests
from deployflow.checks.result import CheckResult, CheckStatus, PreCheckReport
from deployflow.checks.spec import CHECK_KINDS, CheckBase, PreChecksSpec

__all__ = ["CHECKS_BY_KIND", "planned_checks", "resolve_commit", "run_all", "run_check"]

# One line per kind, in report order (the order of CHECK_KINDS; a unit test holds them equal).
CHECKS_BY_KIND: dict[str, CheckFunction] = {
    "tests": check_tests,
    "lint": check_lint,
    "typecheck": check_typecheck,
    "build": check_build,
    "audit": check_audit,
    "review": check_review,
    "changelog": check_changelog,
}


def planned_checks(spec: PreChecksSpec) -> list[str]:
    """Every check kind, in report order; unconfigured ones will report skipped with a reason."""
    del spec  # all kinds are planned so a missing gate shows up as a skipped row, never silently
    return list(CHECK_KINDS)


def run_check(kind: str, spec: PreChecksSpec, ctx: CheckContext) -> CheckResult:
    """Run one check and return its evidence; never raises for check failures.

    Args:
        kind: One of ``CHECK_KINDS``.
        spec: The service's ``pre_checks`` section.
        ctx: The deploy being checked.

    Returns:
        The result; advisory checks that fail come back as advisory_failed.

    Raises:
        ValueError: ``kind`` is not a check kind (a programming error, not a check outcome).
    """
    if kind not in CHECK_KINDS:
        raise ValueError(f"unknown check kind {kind!r}; expected one of {', '.join(CHECK_KINDS)}")
    section: CheckBase | None = getattr(spec, kind)
    if section is None:
        return CheckResult(
            name=kind,
            status=CheckStatus.SKIPPED,
            reason=f"not configured (no pre_checks.{kind} section in the service spec)",
            required=False,
        )
    if section.skip_reason:
        return CheckResult(
            name=kind,
            status=CheckStatus.SKIPPED,
            reason=section.skip_reason,
            required=section.required,
        )
    checkout = ctx.checkout or spec.checkout
    started = time.monotonic()
    try:
        result = CHECKS_BY_KIND[kind](section, checkout, ctx)
    except Exception as exc:  # the step must report, not crash; the message carries no secrets
        result = error_result(kind, f"the check itself failed: {type(exc).__name__}: {exc}")
    result = result.model_copy(
        update={"duration_seconds": time.monotonic() - started, "required": section.required}
    )
    if not section.required and result.status in (CheckStatus.FAILED, CheckStatus.ERROR):
        details = {**result.details, "outcome": result.status.value}
        result = result.model_copy(
            update={"status": CheckStatus.ADVISORY_FAILED, "details": details}
        )
    return result


def run_all(spec: PreChecksSpec, ctx: CheckContext) -> PreCheckReport:
    """Run every planned check concurrently in threads and gather the report.

    The work is waiting on subprocesses and sockets, so threads give the concurrency; each check
    keeps its own timeout.
    """
    kinds = planned_checks(spec)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(kinds), thread_name_prefix="precheck") as pool:
        results = list(pool.map(lambda kind: run_check(kind, spec, ctx), kinds))
    return PreCheckReport(results=results, wall_seconds=time.monotonic() - started)
