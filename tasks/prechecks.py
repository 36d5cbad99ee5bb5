"""Step 1: pre-deployment checks, one Prefect task per gate, run concurrently."""

from __future__ import annotations

import os

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from blocks.github import GitHubCredentialsBlock
from blocks.loader import load_block
from deployflow.checks import CheckContext, CheckResult, PreCheckReport, PreChecksSpec, run_check
from deployflow.checks.kinds.common import error_result
from deployflow.checks.result import CheckStatus
from deployflow.polling import DeadlineExceeded, within_deadline
from deployflow.release import CheckRecord
from tasks.artifacts import artifact_key
from tasks.prefect_api import prefect_only
from tasks.retry_policy import CHECK, retried_in_worker_thread

GITHUB_TOKEN_ENV = "GITHUB_TOKEN"


def github_token(spec: PreChecksSpec) -> SecretStr | None:
    """The review check's token: the GitHub credentials block the spec names, else
    ``GITHUB_TOKEN``, else None (public repositories)."""
    if spec.review is None:
        return None
    if spec.review.credentials_block:
        return load_block(GitHubCredentialsBlock, spec.review.credentials_block).token
    env = os.environ.get(GITHUB_TOKEN_ENV, "").strip()
    return SecretStr(env) if env else None


@task(
    name="pre-deployment-check",
    cache_policy=NO_CACHE,
    **retried_in_worker_thread(retries=1),
    task_run_name="check: {kind}",
)
def pre_deployment_check(kind: str, spec: PreChecksSpec, ctx: CheckContext) -> CheckResult:
    """Run one gate (tests, lint, typecheck, build, audit, review, changelog) and keep its evidence.

    Submitted beside the other gates, so it runs in a worker thread: the check is bounded by its
    own deadline (``CHECK``), past its spec's ``timeout`` that already ends its commands.

    Args:
        kind: Which check.
        spec: The spec's ``pre_checks`` section.
        ctx: Version, refs and the GitHub token of this deploy.
    """
    logger = get_run_logger()
    try:
        result = within_deadline(
            lambda: run_check(kind, spec, ctx), seconds=CHECK, what=f"the {kind} check"
        )
    except DeadlineExceeded as exc:  # a check that cannot tell blocks; an hour is not retried
        result = error_result(kind, str(exc))
    line = f"{kind}: {result.status.value}" + (f" ({result.figure})" if result.figure else "")
    if result.reason:
        line += f": {result.reason}"
    if result.blocks:
        logger.error("%s\n%s", line, result.output_tail)
    else:
        logger.info(line)
    return result


@task(name="pre-deployment-report", cache_policy=NO_CACHE)
def publish_prechecks(report: PreCheckReport, service: str) -> list[CheckRecord]:
    """The checks table, with the evidence of every failure, as an artifact."""
    prefect_only(
        "publish the pre-checks artifact",
        lambda: create_markdown_artifact(
            key=artifact_key("pre-checks", service),
            markdown=report.to_markdown(),
            description=f"Pre-deployment checks of {service}",
        ),
    )
    return [CheckRecord.from_check("pre_checks", r) for r in report.results]


def token_unavailable(error: Exception) -> CheckRecord:
    """The review check cannot run: its token could not be loaded. That blocks, never passes."""
    return CheckRecord(
        "pre_checks", "review", CheckStatus.ERROR, f"GitHub token unavailable: {error}"
    )
