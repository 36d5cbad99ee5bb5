"""Step 9's story: the incident report of a rollback, or the summary of a success, with its chart;
kept in the tracking database, published as an artifact, and written under the data dir, in that
order: a disk that cannot take the file loses no other copy."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.notify.evidence import StorySources, keep_copies, report_dir, save, tell
from deployflow.tracking.ledger import Ledger
from tasks.artifacts import artifact_key
from tasks.prefect_api import require_prefect_api
from tasks.retry_policy import VERIFY, retried

ARTIFACT_PREFIXES = {"incident": "incident", "summary": "deploy-report"}
REPORT_FILE = "its file under the data dir"


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
    except Exception:
        logger.exception("the report of deploy %s could not be written", deployment_id)
        return None
    if report is None:
        return None
    what = "Incident" if report.kind == "incident" else "Release"
    written: list[Path] = []

    def publish() -> None:
        require_prefect_api()  # with the API lost: reported as a lost copy, not tried
        create_markdown_artifact(
            key=artifact_key(ARTIFACT_PREFIXES[report.kind], record.service),
            markdown=report.embedded(),
            description=f"{what}: {record.service} {record.version} ({record.status})",
        )

    # The copies people and the next deploy read first; the file under the data dir, which a
    # full or read-only disk may refuse, last: its failure loses nothing else.
    copies = keep_copies(
        [
            (
                "the tracking database",
                lambda: ledger.save_report(
                    deployment_id, report.kind, report.markdown, report.chart_png
                ),
            ),
            ("the Prefect artifact", publish),
            (
                REPORT_FILE,
                lambda: written.append(save(report, report_dir(record.service, deployment_id))),
            ),
        ]
    )
    for where, why in copies.lost:
        logger.warning(
            "the %s report could not be written to %s: %s; it is kept in %s",
            report.kind, where, why, " and ".join(copies.kept) or "no other copy",
        )  # fmt: skip
    if not written:
        return None
    logger.info("%s report written to %s", report.kind, written[0])
    return str(written[0])
