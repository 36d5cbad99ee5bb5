"""Step 2: migration checks."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.checks.result import CheckStatus
from deployflow.migrations import MigrationsSpec
from deployflow.polling import DeadlineExceeded, within_deadline
from deployflow.release import CheckRecord
from deployflow.schema import MigrationRun
from tasks.artifacts import artifact_key
from tasks.prefect_api import prefect_only
from tasks.retry_policy import CHECK, no_retries, retried_in_worker_thread


@task(name="migration-checks", cache_policy=NO_CACHE, **retried_in_worker_thread(retries=1))
def migration_checks(settings: MigrationsSpec | None, service: str) -> CheckRecord:
    """Check the service's Alembic migrations between the deployed revision and head.

    Rules, reversibility, expand/contract class, the staging round trip and table sizes when a
    staging database is configured; the markdown report becomes an artifact. Submitted beside
    the pre-deployment checks (a worker thread), it is bounded by its own deadline (``CHECK``).
    """
    logger = get_run_logger()
    if settings is None:
        reason = "the spec has no migrations section: this service has no database migrations"
        logger.info("skipped: %s", reason)
        return CheckRecord.skipped("migrations", "migrations", reason)
    # Here, not at the top: the analysis imports pglast and Alembic (seconds of a worker's start),
    # which a service without migrations never needs.
    from deployflow.migrations import MigrationInputError, check_migrations

    try:
        report = within_deadline(
            lambda: check_migrations(settings.path, from_rev=None, settings=settings),
            seconds=CHECK,
            what="the migration checks",
        )
    except (MigrationInputError, DeadlineExceeded) as exc:
        logger.error("migrations cannot be checked: %s", exc)
        return CheckRecord("migrations", "migrations", CheckStatus.ERROR, str(exc))
    prefect_only(
        "publish the migration checks artifact",
        lambda: create_markdown_artifact(
            key=artifact_key("migrations", service),
            markdown=report.to_markdown(),
            description=f"Migration checks of {service}",
        ),
    )
    text = report.to_text()
    # What the risk assessment of step 3 reads: which revisions, and the unsafe findings.
    details = {
        "revisions": [r.revision for r in report.revisions],
        "unsafe": [
            f"{r.revision} {f.rule_id}: {f.message}"
            for r in report.revisions
            for f in r.findings
            if f.counts and f.severity in ("error", "warning")
        ],
        # What step 5 applies and a rollback settles (deployflow.schema.SchemaRange).
        "schema": report.schema_range().to_dict(),
    }
    if report.blocking:
        logger.error("migrations block the deploy:\n%s", text)
        detail = "; ".join(report.blocking_reasons) or "error-level findings"
        return CheckRecord("migrations", "migrations", CheckStatus.FAILED, detail, details=details)
    logger.info("migrations are safe:\n%s", text)
    return CheckRecord("migrations", "migrations", CheckStatus.PASSED, "safe", details=details)


# Never retried: the team's command may not be idempotent; migrate() bounds it (apply.timeout).
@task(name="apply-migrations", cache_policy=NO_CACHE, **no_retries())
def apply_migrations(settings: MigrationsSpec, destination: str, *, upgrade: bool) -> MigrationRun:
    """Upgrade (or downgrade) the service's database to ``destination`` (``migrations.apply``):
    the team's command or Alembic in the service's interpreter; the revision before and after
    read from the database. A failure is the result's ``ok``/``detail``, never an exception."""
    from deployflow.migrations.apply import migrate

    logger = get_run_logger()
    verb = "upgrade" if upgrade else "downgrade"
    try:
        run = migrate(settings, destination, upgrade=upgrade)
    except Exception as exc:  # the database cannot be read, the command cannot start
        logger.error("migrations %s to %s failed: %s", verb, destination, exc)
        return MigrationRun(False, None, None, f"{type(exc).__name__}: {exc}", 0.0, verb)
    if run.ok:
        logger.info(
            "migrations %s: %s -> %s in %.1fs (%s)", verb, run.before, run.after, run.seconds,
            run.command,
        )  # fmt: skip
    else:
        logger.error(
            "migrations %s to %s failed: %s; the database is at %s (was %s)", verb, destination,
            run.detail, run.after, run.before,
        )  # fmt: skip
    return run
