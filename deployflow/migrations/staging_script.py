"""The staging round trip (upgrade, downgrade, upgrade again). Standalone: the standard library,
Alembic, SQLAlchemy 1.3 to 2.x, the database's driver.

deployflow imports it to run the round trip in its own interpreter; with ``migrations.python``
(or ``--python``) it runs this file as a script under the service's interpreter instead
(``python -I staging_script.py``), so revisions that import the application, and the
application's own SQLAlchemy, are those the service deploys with. Nothing here may import
deployflow, and the code stays valid on Python 3.9.

Script protocol: one JSON request on stdin (the staging URL travels there, never in the
arguments), one JSON result on the original stdout; file descriptors 1 and 2 are pointed at a
scratch file first, so what a revision prints never reaches the protocol.

The round trip drives Alembic directly (ScriptDirectory + EnvironmentContext, as ``alembic
upgrade`` does) instead of the project's env.py, so it needs no application settings; the session
gets a lock_timeout so a migration that waits on a lock fails fast instead of hanging.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text


def read_current_revision(engine: Any) -> str | None:
    """The revision in ``alembic_version`` (None when the table is missing or empty)."""
    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise ValueError(f"the database has several current revisions: {', '.join(heads)}")
    return heads[0] if heads else None


def lock_timeout_sql(seconds: float) -> str:
    """The session's ``SET lock_timeout`` for ``seconds``."""
    return f"SET lock_timeout = '{max(1, round(seconds * 1000))}ms'"


def _set_session(conn: Any, sql: str) -> None:
    # Session level (not SET LOCAL) so it survives autocommit blocks and per-migration
    # transactions; committed so Alembic's own transaction starts clean.
    if hasattr(conn, "commit"):  # SQLAlchemy 2.x (and 1.4 future connections)
        conn.execute(text(sql))
        conn.commit()
    else:  # SQLAlchemy 1.3 / 1.4: the autocommit execution option commits it
        conn.execute(text(sql).execution_options(autocommit=True))


def run_leg(
    script: Any, engine: Any, name: str, destination: str, *, upgrade: bool, lock_timeout: float
) -> dict[str, Any]:
    """One leg: migrate to ``destination``; ``{"name", "target", "seconds", "ok", "error",
    "failed_revision", "sql"}``."""
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

    def on_apply(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
        # The step's upper revision is the one applied (upgrade) or undone (downgrade).
        applied.append(step.up_revision_id or "")

    sqlite = engine.dialect.name == "sqlite"
    started = time.perf_counter()
    leg: dict[str, Any] = {"name": name, "target": destination, "ok": True, "error": None,
                           "failed_revision": None, "sql": None}  # fmt: skip
    try:
        # Nested, not one parenthesised `with`: that form is Python 3.10+, this file runs on 3.9.
        with EnvironmentContext(config, script, fn=plan, destination_rev=destination) as env:  # noqa: SIM117
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":
                    _set_session(conn, lock_timeout_sql(lock_timeout))
                env.configure(
                    connection=conn, transaction_per_migration=True, render_as_batch=sqlite,
                    on_version_apply=on_apply,
                )  # fmt: skip
                with env.begin_transaction():
                    env.run_migrations()
    except Exception as exc:  # a failing migration is a result, not a crash
        statement = getattr(exc, "statement", None)
        original = getattr(exc, "orig", None)
        message = str(original if original is not None else exc).strip().splitlines()
        leg.update(
            ok=False, error=f"{type(exc).__name__}: {message[0] if message else ''}",
            failed_revision=planned[len(applied)] if len(applied) < len(planned) else None,
            sql=str(statement) if statement else None,
        )  # fmt: skip
    leg["seconds"] = time.perf_counter() - started
    return leg


def round_trip(request: dict[str, Any]) -> dict[str, Any]:
    """Upgrade to ``to_rev``, downgrade to ``from_rev`` (base when None), upgrade again.

    ``request``: ``{"url", "alembic_dir", "version_locations", "from_rev", "to_rev",
    "lock_timeout", "sys_path"}``. Returns ``{"backend", "starting_revision", "legs", "error"}``.
    """
    result: dict[str, Any] = {"backend": "unknown", "starting_revision": None, "legs": [],
                              "error": None}  # fmt: skip
    added = [entry for entry in request.get("sys_path") or () if entry not in sys.path]
    sys.path[:0] = added
    try:
        try:
            engine = create_engine(request["url"])
        except Exception as exc:  # a malformed URL or a missing driver
            # The type only: a message may quote the URL, password included.
            result["error"] = f"engine: {type(exc).__name__}"
            return result
        result["backend"] = engine.dialect.name
        try:
            try:
                result["starting_revision"] = read_current_revision(engine)
            except Exception as exc:
                result["error"] = f"cannot connect: {type(exc).__name__}"
                return result
            script = ScriptDirectory(
                request["alembic_dir"], version_locations=request.get("version_locations") or None
            )
            legs = (
                ("upgrade", request["to_rev"], True),
                ("downgrade", request.get("from_rev") or "base", False),
                ("upgrade again", request["to_rev"], True),
            )
            for name, destination, upgrade in legs:
                leg = run_leg(
                    script, engine, name, destination, upgrade=upgrade,
                    lock_timeout=float(request.get("lock_timeout") or 5.0),
                )  # fmt: skip
                result["legs"].append(leg)
                if not leg["ok"]:
                    break
        finally:
            engine.dispose()
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)
    return result


def migrate(request: dict[str, Any]) -> dict[str, Any]:
    """One leg on the target database: upgrade (``"upgrade": true``) or downgrade to
    ``destination``, as ``alembic upgrade`` / ``downgrade`` would. Returns the leg with the
    database's revision before and after (``"before"``, ``"after"``)."""
    added = [entry for entry in request.get("sys_path") or () if entry not in sys.path]
    sys.path[:0] = added
    try:
        engine = create_engine(request["url"])
        try:
            before = read_current_revision(engine)
            script = ScriptDirectory(
                request["alembic_dir"], version_locations=request.get("version_locations") or None
            )
            leg = run_leg(
                script, engine, "upgrade" if request["upgrade"] else "downgrade",
                request["destination"], upgrade=bool(request["upgrade"]),
                lock_timeout=float(request.get("lock_timeout") or 5.0),
            )  # fmt: skip
            leg["before"], leg["after"] = before, read_current_revision(engine)
        finally:
            engine.dispose()
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)
    return leg


def main() -> None:
    """Script entry point: one request on stdin, one answer on the original stdout."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    request = json.loads(sys.stdin.readline())
    scratch = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
    os.dup2(scratch.fileno(), 1)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8",
                                  line_buffering=True)  # fmt: skip
    result = migrate(request) if request.get("mode") == "migrate" else round_trip(request)
    protocol.write(json.dumps(result, default=str) + "\n")
    protocol.flush()


if __name__ == "__main__":
    main()
