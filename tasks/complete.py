"""Step 9: record the outcome, write the summary and, after a rollback, the incident report."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.release import ReleaseOutcome, incident_markdown, summary_markdown
from deployflow.tracking.ledger import Ledger
from tasks.artifacts import artifact_key
from tasks.retry_policy import DATABASE, retried


@task(name="complete", cache_policy=NO_CACHE, **retried(DATABASE))
def complete(
    outcome: ReleaseOutcome, ledger: Ledger | None, *, incident_artifact: bool = True
) -> None:
    """Record the outcome in the tracking database and publish the reports as artifacts.

    Args:
        outcome: The release.
        ledger: The tracking database; None records nothing.
        incident_artifact: Publish the short incident report of a rollback; the flow leaves it
            to ``write_report`` (the full one, with charts) when that runs.
    """
    summary = summary_markdown(outcome)
    if ledger is not None:
        ledger.record_outcome(outcome, outcome.message or summary.splitlines()[0].lstrip("# "))
    create_markdown_artifact(
        key=artifact_key("deploy-summary", outcome.service),
        markdown=summary,
        description=f"{outcome.service} {outcome.version}: {outcome.status}",
    )
    if outcome.stages:
        create_table_artifact(
            key=artifact_key("deploy-stages", outcome.service),
            table=[
                {
                    "stage": s.index + 1,
                    "weight": s.weight,
                    "verdict": s.verdict.value,
                    **s.last_values(),
                }
                for s in outcome.stages
            ],
            description=f"Canary stages of {outcome.service} {outcome.version}",
        )
    if outcome.rollback is not None and incident_artifact:
        create_markdown_artifact(
            key=artifact_key("incident", outcome.service),
            markdown=incident_markdown(outcome),
            description=f"Incident: {outcome.service} {outcome.version} rolled back",
        )
    get_run_logger().info("deploy of %s %s: %s", outcome.service, outcome.version, outcome.status)
