"""Step 2: migration checks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from deployflow.spec import ServiceSpec


@task(name="migration-checks", cache_policy=NO_CACHE)
def migration_checks(spec: ServiceSpec) -> list[dict[str, Any]]:
    """Check the service's Alembic migrations between the deployed revision and head."""
    logger = get_run_logger()
    if spec.migrations_path is None:
        reason = "the spec has no migrations_path: this service has no database migrations"
        logger.info("skipped: %s", reason)
        return [{"step": "migrations", "name": "migrations", "status": "skipped", "detail": reason}]
    from deployflow.migrations import check_migrations

    report = check_migrations(spec.migrations_path, from_rev=None)
    status = "failed" if report.blocking else "passed"
    (logger.error if report.blocking else logger.info)(
        "migrations %s:\n%s", status, report.to_text()
    )
    return [
        {
            "step": "migrations",
            "name": "migrations",
            "status": status,
            "detail": report.to_text().splitlines()[0] if report.to_text() else status,
        }
    ]
