"""Step 9: record the outcome, write the summary and, after a rollback, the incident report."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.release import ReleaseOutcome, incident_markdown, summary_markdown
from deployflow.tracking import repository
from tasks.tracking import session


def _key(prefix: str, service: str) -> str:
    # Artifact keys allow lowercase letters, digits and dashes only.
    safe = "".join(ch if ch.isalnum() else "-" for ch in service.lower())
    return f"{prefix}-{safe}"


@task(name="complete", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def complete(outcome: ReleaseOutcome) -> ReleaseOutcome:
    """Record the outcome in the tracking database and publish the reports as artifacts."""
    logger = get_run_logger()
    summary = summary_markdown(outcome)
    if outcome.deployment_id is not None:
        with session() as s:
            repository.update_deployment(
                s,
                outcome.deployment_id,
                status=outcome.status,
                finished_at=datetime.now(UTC),
                summary=outcome.message or summary.splitlines()[0].lstrip("# "),
            )
            for c in outcome.checks:
                repository.add_check_result(
                    s,
                    outcome.deployment_id,
                    step=c["step"],
                    name=c["name"],
                    status=c["status"],
                    figure=c.get("figure"),
                    reason=c.get("reason") or (c["detail"] if c["status"] == "skipped" else None),
                    duration_seconds=c.get("duration_seconds"),
                    details=c.get("details") or {"detail": c.get("detail")},
                )
            if outcome.rollback is not None:
                r = outcome.rollback
                repository.add_incident(
                    s,
                    outcome.deployment_id,
                    stage=r.stage,
                    metric=r.metric,
                    value=r.value,
                    threshold=r.threshold,
                    reason=r.reason,
                    evidence={**r.evidence, "verified": r.verified, "verification": r.verification},
                )
    create_markdown_artifact(
        key=_key("deploy-summary", outcome.service),
        markdown=summary,
        description=f"{outcome.service} {outcome.version}: {outcome.status}",
    )
    if outcome.stages:
        create_table_artifact(
            key=_key("deploy-stages", outcome.service),
            table=[
                {
                    "stage": s["index"] + 1,
                    "weight": s["weight"],
                    "verdict": s["verdict"],
                    **{k: v for k, v in s["values"].items()},
                }
                for s in outcome.stages
            ],
            description=f"Canary stages of {outcome.service} {outcome.version}",
        )
    if outcome.rollback is not None:
        create_markdown_artifact(
            key=_key("incident", outcome.service),
            markdown=incident_markdown(outcome),
            description=f"Incident: {outcome.service} {outcome.version} rolled back",
        )
    logger.info("deploy of %s %s: %s", outcome.service, outcome.version, outcome.status)
    return outcome
