"""Staging round trip (upgrade, downgrade, upgrade again) and table size measurements.

The round trip drives Alembic directly (ScriptDirectory + EnvironmentContext, as ``alembic
upgrade`` does) instead of the project's env.py, so it needs no application settings; the session
gets a lock_timeout so a migration that waits on a lock fails fast instead of hanging. URLs are
only ever shown with their password hidden.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from deployflow.migrations.capture import ALEMBIC_LOCK
from deployflow.migrations.graph import version_locations
from deployflow.migrations.report import StagingLeg, StagingResult


def safe_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as nothing rather than leaked
        return "<invalid database URL>"


def _engine(url: str) -> Engine:
    return create_engine(url)


def read_current_revision(engine: Engine) -> str | None:
    """The revision in ``alembic_version`` (None when the table is missing or empty)."""
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise ValueError(f"the database has several current revisions: {', '.join(heads)}")
    return heads[0] if heads else None


def read_deployed_revision(database_url: str | Any) -> str | None:
    """Read the deployed revision from the target database's ``alembic_version`` table.

    Args:
        database_url: SQLAlchemy URL, as a string or a pydantic ``SecretStr``.

    Returns:
        The revision id, or None when the database has no alembic_version row.
    """
    url = (
        database_url.get_secret_value()
        if hasattr(database_url, "get_secret_value")
        else database_url
    )
    engine = _engine(str(url))
    try:
        return read_current_revision(engine)
    finally:
        engine.dispose()


def _lock_timeout_sql(seconds: float) -> str:
    return f"SET lock_timeout = '{max(1, round(seconds * 1000))}ms'"


def _leg(
    script: ScriptDirectory,
    engine: Engine,
    name: str,
    destination: str,
    *,
    upgrade: bool,
    lock_timeout: float,
) -> StagingLeg:
    config = Config()
    config.set_main_option("script_location", str(script.dir))
    planned: list[str] = []
    applied: list[str] = []

    def plan(rev: Any, _context: Any) -> Any:
        steps = (
            script._upgrade_revs(destination, rev)
            if upgrade
            else script._downgrade_revs(destination, rev)
        )
        planned.extend(step.revision.revision for step in steps)
        return steps

    def on_apply(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        # The step's upper revision is the one applied (upgrade) or undone (downgrade).
        applied.append(step.up_revision_id or "")

    sqlite = engine.dialect.name == "sqlite"
    started = time.perf_counter()
    try:
        with (
            ALEMBIC_LOCK,
            EnvironmentContext(config, script, fn=plan, destination_rev=destination) as env,
            engine.connect() as conn,
        ):
            if engine.dialect.name == "postgresql":
                # Session level (not SET LOCAL) so it survives autocommit blocks and per-migration
                # transactions; committed so Alembic's own transaction starts clean.
                conn.execute(text(_lock_timeout_sql(lock_timeout)))
                conn.commit()
            env.configure(
                connection=conn, transaction_per_migration=True, render_as_batch=sqlite,
                on_version_apply=on_apply,
            )  # fmt: skip
            with env.begin_transaction():
                env.run_migrations()
    except Exception as exc:  # a failing migration is a result, not a crash
        failed = planned[len(applied)] if len(applied) < len(planned) else None
        statement = getattr(exc, "statement", None)
        original = getattr(exc, "orig", None)
        message = str(original if original is not None else exc).strip().splitlines()
        return StagingLeg(
            name, destination, time.perf_counter() - started, False,
            error=f"{type(exc).__name__}: {message[0] if message else ''}",
            failed_revision=failed, sql=str(statement) if statement else None,
        )  # fmt: skip
    return StagingLeg(name, destination, time.perf_counter() - started, True)


def round_trip(
    alembic_dir: Path,
    url: str,
    *,
    from_rev: str | None,
    to_rev: str,
    lock_timeout: float,
) -> StagingResult:
    """Upgrade to ``to_rev``, downgrade to ``from_rev`` (base when None), upgrade again."""
    shown = safe_url(url)
    try:
        engine = _engine(url)
    except Exception as exc:  # a malformed URL or a missing driver
        return StagingResult(shown, "unknown", None, error=f"{type(exc).__name__} for {shown}")
    result = StagingResult(shown, engine.dialect.name, None)
    try:
        try:
            result.starting_revision = read_current_revision(engine)
        except SQLAlchemyError as exc:
            result.error = f"cannot connect to {shown}: {type(exc).__name__}"
            return result
        script = ScriptDirectory(
            str(alembic_dir), version_locations=[str(p) for p in version_locations(alembic_dir)]
        )
        legs = (
            ("upgrade", to_rev, True),
            ("downgrade", from_rev or "base", False),
            ("upgrade again", to_rev, True),
        )
        for name, destination, upgrade in legs:
            leg = _leg(
                script, engine, name, destination, upgrade=upgrade, lock_timeout=lock_timeout
            )
            result.legs.append(leg)
            if not leg.ok:
                break
    finally:
        engine.dispose()
    return result


def measure_tables(
    url: str, tables: Iterable[str], *, row_limit: int
) -> dict[str, tuple[int | None, int | None]]:
    """Estimated rows and total bytes per table (None for what cannot be measured).

    PostgreSQL: ``pg_class.reltuples`` and ``pg_total_relation_size``; a table never analysed
    (reltuples < 0) is counted, but never past ``row_limit`` rows so a huge table costs little.
    SQLite: a bounded count, no size.
    """
    result: dict[str, tuple[int | None, int | None]] = {}
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            postgres = engine.dialect.name == "postgresql"
            for table in sorted(set(tables)):
                schema, _, name = table.rpartition(".")
                rows: int | None = None
                size: int | None = None
                try:
                    if postgres:
                        row = conn.execute(
                            text(
                                "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid) "
                                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                                "WHERE c.relname = :name AND c.relkind IN ('r', 'p') AND "
                                "n.nspname = COALESCE(NULLIF(:schema, ''), current_schema())"
                            ),
                            {"name": name, "schema": schema},
                        ).first()
                        if row is None:
                            continue
                        rows, size = int(row[0]), int(row[1])
                    if rows is None or rows < 0:
                        quoted = conn.dialect.identifier_preparer.quote(name)
                        if schema:
                            quoted = f"{conn.dialect.identifier_preparer.quote(schema)}.{quoted}"
                        rows = int(
                            conn.execute(
                                text(f"SELECT count(*) FROM (SELECT 1 FROM {quoted} LIMIT :n) s"),
                                {"n": row_limit + 1},
                            ).scalar_one()
                        )
                except SQLAlchemyError:
                    conn.rollback()  # the table does not exist (yet): nothing to measure
                    continue
                result[table] = (rows, size)
    finally:
        engine.dispose()
    return result
