"""Step 9: record the outcome, then write the summary (and, without the full report, the incident
report) from the record read back from the tracking database."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.notify.report import ReportEvidence, deploy_summary, incident_report, stage_rows
from deployflow.release import ReleaseOutcome
from deployflow.tracking.ledger import Ledger
from tasks.artifacts import artifact_key
from tasks.retry_policy import DATABASE, retried


@task(name="complete", cache_policy=NO_CACHE, **retried(DATABASE))
def complete(outcome: ReleaseOutcome, ledger: Ledger, *, incident_artifact: bool = True) -> None:
    """Record the outcome in the tracking database and publish the reports, rendered from the
    deploy's record as the database keeps it, as artifacts.

    Args:
        outcome: The release.
        ledger: The tracking database.
        incident_artifact: Publish the incident report of a rollback without the evidence
            gathered afterwards; the flow leaves it to ``write_report`` (charts, breakdown, the
            canary's log, commits) when that runs.
    """
    logger = get_run_logger()
    if outcome.deployment_id is None:  # no row was made: nothing to record or tell from
        logger.warning("deploy of %s %s has no tracking row", outcome.service, outcome.version)
        return
    ending = f"{outcome.service} {outcome.version} → {outcome.environment}: {outcome.status}"
    if not ledger.record_outcome(outcome, outcome.message or ending.replace("_", " ")):
        # Closed by another run (this deploy lost its lease): that record stands.
        logger.warning(
            "deploy of %s %s: its tracking row %s was already closed by another run; this "
            "run's ending (%s) is not written over it",
            outcome.service, outcome.version, outcome.deployment_id, outcome.status,
        )  # fmt: skip
    record = ledger.record(outcome.deployment_id)
    create_markdown_artifact(
        key=artifact_key("deploy-summary", record.service),
        markdown=deploy_summary(record),
        description=f"{record.service} {record.version}: {record.status}",
    )
    if record.stages:
        create_table_artifact(
            key=artifact_key("deploy-stages", record.service),
            table=stage_rows(record),
            description=f"Stages of {record.service} {record.version}: the last figures measured",
        )
    if record.incident is not None and incident_artifact:
        create_markdown_artifact(
            key=artifact_key("incident", record.service),
            markdown=incident_report(record, ReportEvidence(), None).markdown,
            description=f"Incident: {record.service} {record.version} rolled back",
        )
    logger.info("deploy of %s %s: %s", record.service, record.version, record.status)
