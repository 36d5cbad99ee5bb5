"""Staging round trip (upgrade, downgrade, upgrade again) and table size measurements.

The round trip itself is ``staging_script`` (standalone, so it can run under the service's own
interpreter). URLs are only ever shown with their password hidden.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from deployflow.migrations import staging_script
from deployflow.migrations.capture import ALEMBIC_LOCK
from deployflow.migrations.graph import version_locations
from deployflow.migrations.report import StagingLeg, StagingResult
from deployflow.migrations.staging_script import read_current_revision

STAGING_SCRIPT = Path(staging_script.__file__).resolve()
# The round trip's bound as a whole when it runs in the service's interpreter (each statement
# is already bounded by the session's lock_timeout while it waits for a lock).
STAGING_TIMEOUT = 900.0

__all__ = ["measure_tables", "read_current_revision", "read_deployed_revision", "round_trip",
           "safe_url"]  # fmt: skip


def safe_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as nothing rather than leaked
        return "<invalid database URL>"


def _engine(url: str) -> Engine:
    """An engine for deployflow's own reads. The URL is written for the service's driver: a
    ``postgresql://`` (psycopg2) one is read with psycopg 3, deployflow's, when psycopg2 is not
    installed here."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() == "postgresql"
        and parsed.get_driver_name() == "psycopg2"
        and importlib.util.find_spec("psycopg2") is None
        and importlib.util.find_spec("psycopg") is not None
    ):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed)


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


def script_request(
    alembic_dir: Path, url: str, from_rev: str | None, to_rev: str, lock_timeout: float,
    sys_path: list[str],
) -> dict[str, Any]:  # fmt: skip
    return {
        "url": url, "alembic_dir": str(alembic_dir.resolve()),
        "version_locations": [str(p.resolve()) for p in version_locations(alembic_dir)],
        "from_rev": from_rev, "to_rev": to_rev, "lock_timeout": lock_timeout,
        "sys_path": sys_path,
    }  # fmt: skip


def round_trip(
    alembic_dir: Path,
    url: str,
    *,
    from_rev: str | None,
    to_rev: str,
    lock_timeout: float,
    python: str | None = None,
    sys_path: list[str] | None = None,
    cwd: Path | None = None,
    timeout: float = STAGING_TIMEOUT,
) -> StagingResult:
    """Upgrade to ``to_rev``, downgrade to ``from_rev`` (base when None), upgrade again.

    With ``python`` (the service's interpreter) the round trip runs in a process of it
    (``staging_script``), the URL handed over on stdin; else in deployflow's own, under
    Alembic's process-wide lock. ``sys_path`` is where the application is importable from.
    """
    request = script_request(alembic_dir, url, from_rev, to_rev, lock_timeout, list(sys_path or []))
    if python:
        data = run_script(python, request, cwd or alembic_dir, timeout)
    else:
        with ALEMBIC_LOCK:
            data = staging_script.round_trip(request)
    result = StagingResult(
        safe_url(url), str(data.get("backend") or "unknown"), data.get("starting_revision"),
        error=data.get("error"), interpreter=python,
    )  # fmt: skip
    if result.error and result.error.startswith("cannot connect"):
        result.error = f"cannot connect to {result.url}: {result.error.split(': ', 1)[-1]}"
    elif result.error and result.error.startswith("engine: "):
        result.error = f"{result.error.removeprefix('engine: ')} for {result.url}"
    for leg in data.get("legs") or ():
        result.legs.append(
            StagingLeg(
                str(leg["name"]), str(leg["target"]), float(leg.get("seconds") or 0.0),
                bool(leg.get("ok")), error=leg.get("error"),
                failed_revision=leg.get("failed_revision"), sql=leg.get("sql"),
            )
        )  # fmt: skip
    return result


def run_script(python: str, request: dict[str, Any], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``staging_script`` under ``python``; its failure to run is the result's error."""
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(
                [python, "-I", str(STAGING_SCRIPT)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=errors, cwd=cwd, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            return {"error": f"cannot start {python}: {exc}"}
        try:
            out, _ = process.communicate(json.dumps(request).encode() + b"\n", timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return {"error": f"the round trip in {python} took more than {timeout:g}s: stopped"}
        try:
            data = json.loads(out.decode("utf-8", "replace").strip().splitlines()[-1])
        except (ValueError, IndexError):
            errors.seek(0)
            lines = errors.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {process.returncode}"
            return {"error": f"the round trip could not run in {python}: {why}"}
    return data if isinstance(data, dict) else {"error": f"unreadable answer from {python}"}


def measure_tables(
    url: str, tables: Collection[str], *, row_limit: int
) -> dict[str, tuple[int | None, int | None]]:
    """Estimated rows and total bytes per table (None for what cannot be measured).

    PostgreSQL: ``pg_class.reltuples`` and ``pg_total_relation_size``; a table never analysed
    (reltuples < 0) is counted, but never past ``row_limit`` rows so a huge table costs little.
    SQLite: a bounded count, no size.
    """
    result: dict[str, tuple[int | None, int | None]] = {}
    if not tables:
        return result
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
