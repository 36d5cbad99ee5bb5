"""Step 1: pre-deployment checks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.commands import run_command
from deployflow.spec import CommandCheck


@task(name="pre-deployment-check", cache_policy=NO_CACHE, task_run_name="check: {check.name}")
def run_check_command(check: CommandCheck) -> dict[str, Any]:
    """Run one configured check command; a non-zero exit fails the check.

    Args:
        check: The check from the spec's ``checks`` list.

    Returns:
        step, name, status (passed / failed / error), detail and output tail.
    """
    logger = get_run_logger()
    logger.info("running %s: %s", check.name, " ".join(check.command))
    result = run_command(check.command, timeout=check.timeout)
    if result.ok:
        status, detail = "passed", f"exit 0 in {result.duration_seconds:.1f}s"
        logger.info("%s passed", check.name)
    else:
        status = "error" if result.exit_code is None else "failed"
        detail = result.error or f"exit {result.exit_code}"
        logger.error("%s %s: %s\n%s", check.name, status, detail, result.output_tail)
    return {
        "step": "pre_checks",
        "name": check.name,
        "status": status,
        "detail": detail,
        "output_tail": result.output_tail,
        "duration_seconds": result.duration_seconds,
    }
