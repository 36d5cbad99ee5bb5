"""Step 2: migration checks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.migrations import MigrationInputError, check_migrations
from deployflow.spec import ServiceSpec


@task(name="migration-checks", cache_policy=NO_CACHE)
def migration_checks(spec: ServiceSpec) -> list[dict[str, Any]]:
    """Check the service's Alembic migrations between the deployed revision and head.

    Rules, reversibility, expand/contract class, the staging round trip and table sizes when a
    staging database is configured; the markdown report becomes an artifact.
    """
    logger = get_run_logger()
    settings = spec.migrations
    if settings is None:
        reason = "the spec has no migrations section: this service has no database migrations"
        logger.info("skipped: %s", reason)
        return [{"step": "migrations", "name": "migrations", "status": "skipped", "detail": reason}]
    try:
        report = check_migrations(settings.path, from_rev=None, settings=settings)
    except MigrationInputError as exc:
        logger.error("migrations cannot be checked: %s", exc)
        return [{"step": "migrations", "name": "migrations", "status": "error", "detail": str(exc)}]
    create_markdown_artifact(
        key=f"migrations-{spec.service}",
        markdown=report.to_markdown(),
        description=f"Migration checks of {spec.service}",
    )
    text = report.to_text()
    if report.blocking:
        logger.error("migrations block the deploy:\n%s", text)
        detail = "; ".join(report.blocking_reasons) or "error-level findings"
        return [{"step": "migrations", "name": "migrations", "status": "failed", "detail": detail}]
    logger.info("migrations are safe:\n%s", text)
    return [{"step": "migrations", "name": "migrations", "status": "passed", "detail": "safe"}]
