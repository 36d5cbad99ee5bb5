"""Step 1 of a deploy: pre-deployment checks as parallel gates that show their evidence.

The flow runs ``run_check(kind, spec, ctx)`` for each of ``planned_checks(spec)`` as its own task;
the CLI and the benchmark use ``run_all``.
"""

from deployflow.checks.context import CheckContext
from deployflow.checks.result import CheckResult, CheckStatus, PreCheckReport
from deployflow.checks.runner import planned_checks, run_all, run_check
from deployflow.checks.spec import CHECK_KINDS, PreChecksSpec

__all__ = [
    "CHECK_KINDS",
    "CheckContext",
    "CheckResult",
    "CheckStatus",
    "PreCheckReport",
    "PreChecksSpec",
    "planned_checks",
    "run_all",
    "run_check",
]
