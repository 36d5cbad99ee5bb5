"""Step 1: pre-deployment checks, one Prefect task per gate, run concurrently."""

from __future__ import annotations

from typing import cast

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from deployflow.checks import CheckContext, CheckResult, PreCheckReport, PreChecksSpec, run_check


def github_token(spec: PreChecksSpec) -> SecretStr | None:
    """The review check's token from the Prefect Secret block the spec names."""
    if spec.review is None or not spec.review.token_secret_block:
        return None
    block = cast(Secret[str], Secret.load(spec.review.token_secret_block))
    return SecretStr(str(block.get()))


@task(
    name="pre-deployment-check",
    cache_policy=NO_CACHE,
    task_run_name="check: {kind}",
)
def pre_deployment_check(kind: str, spec: PreChecksSpec, ctx: CheckContext) -> CheckResult:
    """Run one gate (tests, lint, typecheck, build, audit, review, changelog) and keep its evidence.

    Args:
        kind: Which check.
        spec: The spec's ``pre_checks`` section.
        ctx: Version, refs and the GitHub token of this deploy.
    """
    logger = get_run_logger()
    result = run_check(kind, spec, ctx)
    line = f"{kind}: {result.status.value}" + (f" ({result.figure})" if result.figure else "")
    if result.reason:
        line += f": {result.reason}"
    if result.blocks:
        logger.error("%s\n%s", line, result.output_tail)
    else:
        logger.info(line)
    return result


@task(name="pre-deployment-report", cache_policy=NO_CACHE)
def publish_prechecks(report: PreCheckReport, service: str) -> None:
    """The checks table, with the evidence of every failure, as an artifact."""
    create_markdown_artifact(
        key=f"pre-checks-{service}",
        markdown=report.to_markdown(),
        description=f"Pre-deployment checks of {service}",
    )
