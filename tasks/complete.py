"""Step 9: record the outcome, then write the summary (and, without the full report, the incident
report) from the record read back from the tracking database."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.notify.report import ReportEvidence, deploy_summary, incident_report, stage_rows
from deployflow.release import ReleaseOutcome
from deployflow.tracking.answers import keep_trying
from deployflow.tracking.lease import lease_seconds
from deployflow.tracking.ledger import Ledger
from tasks.artifacts import artifact_key
from tasks.prefect_api import prefect_only
from tasks.retry_policy import DATABASE, retried


# It keeps trying the record itself while the database does not answer, for at most one lease
# period (after that the next deploy may reconcile the row anyway); Prefect retries the rest.
@task(name="complete", cache_policy=NO_CACHE, **retried(DATABASE * 2))
def complete(
    outcome: ReleaseOutcome, ledger: Ledger, *, incident_artifact: bool = True
) -> str | None:
    """Record the outcome in the tracking database and publish the reports, rendered from the
    deploy's record as the database keeps it, as artifacts. A database that does not answer is
    asked again for up to one lease period (``DEPLOYFLOW_LEASE_SECONDS``, 30 s by default);
    then the deploy ends without its record, and the next deploy reconciles the row.

    Args:
        outcome: The release.
        ledger: The tracking database.
        incident_artifact: Publish the incident report of a rollback without the evidence
            gathered afterwards; the flow leaves it to ``write_report`` (charts, breakdown, the
            canary's log, commits) when that runs.

    Returns:
        None once recorded (or with no row to record in), else why it could not be, in words.
    """
    logger = get_run_logger()
    if outcome.deployment_id is None:  # no row was made: nothing to record or tell from
        logger.warning("deploy of %s %s has no tracking row", outcome.service, outcome.version)
        return None
    ending = f"{outcome.service} {outcome.version} → {outcome.environment}: {outcome.status}"
    summary = outcome.message or ending.replace("_", " ")
    patience = lease_seconds()
    written: list[bool] = []
    attempts: list[int] = []

    def write_outcome() -> None:
        attempts.append(1)
        written.append(ledger.record_outcome(outcome, summary))

    failure = keep_trying(write_outcome, patience)
    if failure is not None:
        why = ledger.answers.error or f"{type(failure).__name__}: {failure}"
        logger.error(
            "the outcome of deploy %s (%s) could not be recorded in the tracking database within "
            "%g s: %s; the next deploy reconciles its row",
            outcome.deployment_id, outcome.status, patience, why,
        )  # fmt: skip
        return why
    if written and not written[-1]:
        # Closed by another run (this deploy lost its lease), or by an earlier attempt of this one
        # whose answer the database lost: either way that record stands.
        by = (
            "another run"
            if len(attempts) == 1
            else "another run, or by this run's earlier attempt whose answer was lost"
        )
        logger.warning(
            "deploy of %s %s: its tracking row %s was already closed by %s; this run's ending "
            "(%s) is not written over it",
            outcome.service, outcome.version, outcome.deployment_id, by, outcome.status,
        )  # fmt: skip
    record = ledger.record(outcome.deployment_id)
    # Prefect's copies of what the database now holds: never worth failing or holding up a deploy.
    prefect_only(
        "publish the deploy's summary artifact",
        lambda: create_markdown_artifact(
            key=artifact_key("deploy-summary", record.service),
            markdown=deploy_summary(record),
            description=f"{record.service} {record.version}: {record.status}",
        ),
    )
    if record.stages:
        prefect_only(
            "publish the stages artifact",
            lambda: create_table_artifact(
                key=artifact_key("deploy-stages", record.service),
                table=stage_rows(record),
                description=(
                    f"Stages of {record.service} {record.version}: the last figures measured"
                ),
            ),
        )
    if record.incident is not None and incident_artifact:
        prefect_only(
            "publish the incident artifact",
            lambda: create_markdown_artifact(
                key=artifact_key("incident", record.service),
                markdown=incident_report(record, ReportEvidence(), None).markdown,
                description=f"Incident: {record.service} {record.version} rolled back",
            ),
        )
    logger.info("deploy of %s %s: %s", record.service, record.version, record.status)
    return None
