"""Step 9's story: the incident report of a rollback, or the summary of a success, with its chart;
kept in the tracking database, written under the data dir and published as an artifact."""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.notify.evidence import StorySources, report_dir, save, tell
from deployflow.tracking.ledger import Ledger
from tasks.artifacts import artifact_key
from tasks.prefect_api import prefect_only
from tasks.retry_policy import VERIFY, retried

ARTIFACT_PREFIXES = {"incident": "incident", "summary": "deploy-report"}


# It catches its own failures (a report never fails the deploy); the timeout bounds a hung query.
@task(name="write-report", cache_policy=NO_CACHE, **retried(VERIFY))
def write_report(ledger: Ledger, deployment_id: int, sources: StorySources) -> str | None:
    """Gather the evidence, render the report and keep it; returns the report file's path, or
    None when the deploy gets no report (dry run, refused, nothing released). Never fails the
    deploy: a report that cannot be written is logged."""
    logger = get_run_logger()
    try:
        record = ledger.record(deployment_id)
        started = record.started_at
        if sources.previous_ref is None and record.git_ref and started is not None:
            before = ledger.released_before(record.service, record.environment, started)
            if before is not None and before.git_ref:
                sources = replace(sources, previous_ref=before.git_ref)
        report = tell(record, sources)
        if report is None:
            return None
        path = save(report, report_dir(record.service, deployment_id))
        ledger.save_report(deployment_id, report.kind, report.markdown, report.chart_png)
        what = "Incident" if report.kind == "incident" else "Release"
        prefect_only(
            f"publish the {report.kind} report artifact",
            lambda: create_markdown_artifact(
                key=artifact_key(ARTIFACT_PREFIXES[report.kind], record.service),
                markdown=report.embedded(),
                description=f"{what}: {record.service} {record.version} ({record.status})",
            ),
        )
    except Exception:
        logger.exception("the report of deploy %s could not be written", deployment_id)
        return None
    logger.info("%s report written to %s", report.kind, path)
    return str(path)
