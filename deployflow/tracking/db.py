"""Where the tracking database lives, how to connect to it, and how to migrate it.

Alembic is configured in code (no ``alembic.ini`` needed at runtime), so an installed deployflow can
migrate its own database. ``upgrade`` is safe to call from several processes at once: it holds a
database-level lock (a PostgreSQL advisory lock, or SQLite's write lock taken by ``BEGIN
IMMEDIATE``) around Alembic, and every migration runs in that one transaction.

Alembic (with Mako, about a tenth of a worker's import time) is imported only when a migration
runs: a database already at the newest revision, the case of every deploy after the first, is
recognised with one query (``upgrade``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DATABASE_URL_ENV = "DEPLOYFLOW_DATABASE_URL"
DATA_DIR_ENV = "DEPLOYFLOW_DATA_DIR"
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5

# Any constant works as long as every deployflow process uses the same one: it names the
# PostgreSQL advisory lock that serialises concurrent ``upgrade`` calls.
_MIGRATION_LOCK_KEY = 0x6465706C6F79  # "deploy"

# Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_SQLITE_BEGIN_OPTION = "deployflow_sqlite_begin"


class TrackingDatabaseError(RuntimeError):
    """The tracking database could not be reached or migrated (the message has no password)."""


def mask_url(url: str | URL) -> str:
    """Render ``url`` for messages and logs with its password replaced by ``***``."""
    return make_url(url).render_as_string(hide_password=True)


def data_dir() -> Path:
    """``DEPLOYFLOW_DATA_DIR`` or ``~/.deployflow``, created if missing."""
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    path = Path(configured).expanduser() if configured else Path.home() / ".deployflow"
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """The tracking database URL.

    Returns:
        ``DEPLOYFLOW_DATABASE_URL`` if set, else a SQLite file ``deployflow.db`` in ``data_dir()``.
    """
    configured = os.environ.get(DATABASE_URL_ENV, "").strip()
    if configured:
        return configured
    return f"sqlite:///{data_dir() / 'deployflow.db'}"


def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def make_engine(url: str | URL | None = None, **engine_options: Any) -> Engine:
    """Create an engine for the tracking database.

    On SQLite, every connection gets foreign keys enforced (SQLite ignores them by default, which
    would make ``ON DELETE CASCADE`` a no-op), a busy timeout so concurrent writers wait instead of
    failing with "database is locked", WAL journaling so readers do not block the flow's writes, and
    real transactions around DDL (the stdlib driver otherwise commits before each DDL statement,
    which makes a half-applied migration possible).

    Args:
        url: SQLAlchemy URL; ``database_url()`` when omitted.
        **engine_options: Passed to ``sqlalchemy.create_engine``.

    Returns:
        The engine. The caller disposes it.
    """
    parsed = make_url(url if url is not None else database_url())
    if not _is_sqlite(parsed):
        engine_options.setdefault("pool_pre_ping", True)
        if parsed.get_driver_name() in ("psycopg", "psycopg2") and "connect_timeout" not in (
            parsed.query
        ):
            # A server that stops answering (not refusing) must fail a deploy's query in
            # seconds, not after the kernel's minutes of TCP retries: a stage's look waits on it.
            connect_args = dict(engine_options.pop("connect_args", {}))
            connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
            engine_options["connect_args"] = connect_args
        return create_engine(parsed, **engine_options)

    connect_args = dict(engine_options.pop("connect_args", {}))
    connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_SECONDS)
    engine = create_engine(parsed, connect_args=connect_args, **engine_options)
    in_memory = parsed.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; the "begin" hook below emits BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(connection: Connection) -> None:
        mode = connection.get_execution_options().get(_SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose objects stay readable after commit (for reports and JSON output)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def writing_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Like ``session_factory``, for transactions that may write.

    On SQLite each transaction begins ``IMMEDIATE``: it takes the write lock at ``BEGIN``, where the
    busy timeout applies. A deferred transaction that reads first and writes later cannot wait for
    the lock at its first write: SQLite answers "database is locked" at once when another
    connection wrote meanwhile (WAL snapshot), so a busy deploy and its lease heartbeat would fail
    each other. Other databases ignore the option.
    """
    return session_factory(engine.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"}))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations, built in code.

    Args:
        connection: When given, ``env.py`` runs the migrations on it (inside its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this deployflow."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships at least one revision
        raise TrackingDatabaseError("no migrations found in the deployflow package")
    return head


@contextmanager
def _engine_for(url_or_engine: str | URL | Engine) -> Iterator[Engine]:
    if isinstance(url_or_engine, Engine):
        yield url_or_engine
        return
    engine = make_engine(url_or_engine)
    try:
        yield engine
    finally:
        engine.dispose()


def _sqlite_pragma(connection: Connection, pragma: str) -> None:
    # Straight to the driver: going through SQLAlchemy would autobegin a transaction, and SQLite
    # silently ignores "PRAGMA foreign_keys" inside one.
    driver_connection = connection.connection.driver_connection
    if driver_connection is None:  # pragma: no cover - only after the connection was invalidated
        raise TrackingDatabaseError("the SQLite connection was closed during a migration")
    cursor = driver_connection.cursor()
    try:
        cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction that holds the cross-process migration lock."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            # Batch migrations copy and drop tables; with foreign keys on, dropping a parent table
            # would cascade-delete its children. The pragma only changes outside a transaction.
            _sqlite_pragma(connection, "foreign_keys = OFF")
            connection = connection.execution_options(**{_SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                    )
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise TrackingDatabaseError(
                            f"migration left rows with dangling foreign keys: {broken[:5]}"
                        )
        finally:
            if sqlite:
                # Pooled connections are reused: leave them as make_engine configured them.
                _sqlite_pragma(connection, "foreign_keys = ON")


def _run_alembic(url_or_engine: str | URL | Engine, action: str, revision: str) -> None:
    with _engine_for(url_or_engine) as engine:
        shown = mask_url(engine.url)
        logger.info("tracking database %s: %s to %s", shown, action, revision)
        try:
            with _migration_connection(engine) as connection:
                from alembic import command

                config = alembic_config(connection)
                if action == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)
        except TrackingDatabaseError:
            raise
        except Exception as exc:
            # Driver errors do not include the URL, but say which database failed, masked.
            raise TrackingDatabaseError(
                f"{action} of tracking database {shown} to {revision!r} failed: {exc}"
            ) from exc


def upgrade(url_or_engine: str | URL | Engine | None = None, revision: str = "head") -> None:
    """Migrate the tracking database up to ``revision``; a no-op when already there.

    Args:
        url_or_engine: URL or engine; ``database_url()`` when omitted.
        revision: Alembic revision, ``"head"`` for the newest.

    Raises:
        TrackingDatabaseError: The database is unreachable or a migration failed (rolled back).
    """
    target = url_or_engine if url_or_engine is not None else database_url()
    if revision == "head" and _at_head(target):
        return
    _run_alembic(target, "upgrade", revision)


_REVISION_LINE = re.compile(r'^(down_revision|revision)\b[^=]*=\s*(None|"([^"]*)")', re.M)


def shipped_head() -> str | None:
    """The newest revision shipped, read from the migration files without importing Alembic;
    None when the files do not name exactly one head (then Alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        found = {name: value for name, _, value in _REVISION_LINE.findall(path.read_text())}
        if not found.get("revision"):
            return None
        revisions.add(found["revision"])
        if found.get("down_revision"):
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(url_or_engine: str | URL | Engine) -> bool:
    """True when the database is at the shipped head (one query); False when unsure."""
    head = shipped_head()
    if head is None:
        return False
    try:
        with _engine_for(url_or_engine) as engine, engine.connect() as connection:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:  # no table yet, or unreachable: the migration path says which
        return False
    return [row[0] for row in rows] == [head]


def downgrade(url_or_engine: str | URL | Engine | None, revision: str) -> None:
    """Migrate the tracking database down to ``revision`` (``"base"`` drops every table).

    Args:
        url_or_engine: URL or engine; ``database_url()`` when None.
        revision: Target revision; no default on purpose, since downgrading loses data.

    Raises:
        TrackingDatabaseError: The database is unreachable or a migration failed (rolled back).
    """
    target = url_or_engine if url_or_engine is not None else database_url()
    _run_alembic(target, "downgrade", revision)


def current_revision(url_or_engine: str | URL | Engine | None = None) -> str | None:
    """The revision the database is at, or None for an empty (never migrated) database."""
    with (
        _engine_for(url_or_engine if url_or_engine is not None else database_url()) as engine,
        engine.connect() as connection,
    ):
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()
