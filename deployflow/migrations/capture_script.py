"""Record what Alembic revisions do, offline. Standalone: the standard library, Alembic, SQLAlchemy.

deployflow imports this module to capture in its own interpreter. With ``migrations.python`` (or
``--python``) it runs this file as a script under the service's interpreter instead
(``python -I capture_script.py``), so a revision that imports the application resolves it as the
service's own CI would; that interpreter has Alembic but not deployflow, hence nothing here may
import deployflow, and the code stays valid on Python 3.9 and SQLAlchemy 1.3 to 2.x.

No network while a revision is read: a Python audit hook refuses socket connects, sends and name
lookups (``network_refused``); the attempts come back in the result's ``network``.

Script protocol: a first line ``{"ready": true, "python", "sqlalchemy", "alembic"}`` once a
capture of its own worked (else the process ends, its reason on stderr); then one JSON request
per line on stdin, ``{"path": ..., "functions": [...], "sys_path": [...]}``, one JSON result per
line on the original stdout (file descriptors 1 and 2
are pointed at a scratch file first, so whatever a revision prints, even from C, never reaches the
protocol; it is returned as ``output``).

Each function runs against Alembic ``Operations`` in ``as_sql`` mode on the PostgreSQL dialect:
nothing touches a database, every operation is recorded as a plain dict (the fields of
deployflow's ``Operation``) with the SQL it renders; ``op.execute`` text is returned as
``raw_sql`` for deployflow to parse.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import ipaddress
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic.operations import Operations
from alembic.operations import ops as alembic_ops
from alembic.operations.base import BatchOperations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine.url import make_url  # sqlalchemy.engine re-exports it only from 1.4
from sqlalchemy.sql.elements import ClauseElement, TextClause
from sqlalchemy.types import TypeEngine

try:  # Alembic 1.7+; older versions have no exclusion constraint operation
    from alembic.ddl.postgresql import CreateExcludeConstraintOp
except ImportError:  # pragma: no cover - depends on the service's Alembic
    CreateExcludeConstraintOp = None  # type: ignore[assignment,misc]

# Alembic installs ``alembic.op`` as a process-wide proxy: one capture at a time.
ALEMBIC_LOCK = threading.RLock()

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]

VOLATILE_FUNCTIONS = (
    "random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
    "uuid_generate_v7", "uuidv4", "uuidv7", "clock_timestamp", "timeofday", "nextval", "setseed",
    "txid_current",
)  # fmt: skip
VOLATILE_RE = re.compile(r"\b(" + "|".join(sorted(VOLATILE_FUNCTIONS)) + r")\s*\(", re.I)
NOT_NULL_CHECK_RE = re.compile(r'^\s*\(?\s*"?(\w+)"?\s+IS\s+NOT\s+NULL\s*\)?\s*$', re.I)

OperationDict = dict[str, Any]


class NetworkRefused(ConnectionRefusedError):
    """A revision tried to reach the network while it was read offline (never let through)."""


# Socket audit events (PEP 578) that open a connection or leave the machine.
_NETWORK_EVENTS = frozenset(
    {
        "socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo",
    }
)  # fmt: skip
_GUARD = threading.local()
# The worker process guards every thread (a revision may start its own); deployflow's process
# guards only the threads reading a revision.
_GUARD_EVERY_THREAD: list[list[str]] = []
_GUARD_INSTALLED = threading.Lock()
_guard_hooked = False


def _describe_network(event: str, args: tuple[Any, ...]) -> str:
    verbs = {
        "socket.connect": "connect to",
        "socket.sendto": "send to",
        "socket.sendmsg": "send to",
    }
    if event in verbs and len(args) >= 2:
        address = args[1]
        if isinstance(address, tuple) and len(address) >= 2:
            return f"{verbs[event]} {address[0]}:{address[1]}"
        return f"{verbs[event]} {address!r}"
    if event == "socket.getaddrinfo" and args:
        port = f":{args[1]}" if len(args) > 1 and args[1] else ""
        return f"look up {args[0]}{port}"
    return f"{event.split('.', 1)[1]} {args[0]!r}" if args else event


_LOOKUPS = frozenset(
    {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}
)


def _resolves_locally(event: str, args: tuple[Any, ...]) -> bool:
    """A lookup of an IP address literal sends no DNS query (a metrics client made at import
    time looks up 127.0.0.1 this way); only a connection or a send from it would leave."""
    if event not in _LOOKUPS or not args:
        return False
    host = args[0][0] if event == "socket.getnameinfo" and isinstance(args[0], tuple) else args[0]
    if host is None:
        return True
    try:
        ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host))
    except ValueError:
        return False
    return True


def _network_hook(
    event: str,
    args: tuple[Any, ...],
    _events: frozenset[str] = _NETWORK_EVENTS,
    _guard: threading.local = _GUARD,
    _every_thread: list[list[str]] = _GUARD_EVERY_THREAD,
) -> None:
    # What the hook reads is bound as defaults: an audit hook also runs while the interpreter
    # shuts down, when this module's globals are already None.
    if event not in _events:
        return
    attempts = getattr(_guard, "attempts", None)
    if attempts is None and _every_thread:
        attempts = _every_thread[-1]
    if attempts is None or _resolves_locally(event, args):
        return
    what = _describe_network(event, args)
    attempts.append(what)
    raise NetworkRefused(f"deployflow reads revisions without network: {what} refused")


@contextmanager
def network_refused(attempts: list[str]) -> Iterator[None]:
    """Refuse every socket connection and send (loopback included) and every name lookup that
    would query DNS, made by this thread (a Python audit hook, installed once and never
    removed); each refused attempt is appended to ``attempts``.

    What C code does without Python's socket module (a database driver's own client library)
    raises no audit event and is not seen.
    """
    global _guard_hooked
    with _GUARD_INSTALLED:
        if not _guard_hooked:
            sys.addaudithook(_network_hook)
            _guard_hooked = True
    previous = getattr(_GUARD, "attempts", None)
    _GUARD.attempts = attempts
    try:
        yield
    finally:
        _GUARD.attempts = previous


class CaptureInterrupted(BaseException):
    """Raised into a capture from outside (deployflow's per-revision deadline); never swallowed
    here, and not an ``Exception``, so a revision's ``except Exception`` lets it through."""


def qualified(name: str | None, schema: str | None) -> str | None:
    """``schema.name`` when a schema is given, else ``name``."""
    if not isinstance(name, str):
        return None
    return f"{schema}.{name}" if isinstance(schema, str) and schema else name


def _op(kind: str, table: str | None = None, column: str | None = None, sql: str = "",
        **fields: Any) -> OperationDict:  # fmt: skip
    record: OperationDict = {"kind": kind, "table": table, "column": column, "sql": sql}
    record.update(fields)
    return record


def render(clause: Any) -> str:
    """SQL text of a clause (literal values inlined where SQLAlchemy can)."""
    if isinstance(clause, str):
        return clause
    if isinstance(clause, TextClause):
        return clause.text
    if isinstance(clause, ClauseElement):
        try:
            return str(clause.compile(dialect=_PG, compile_kwargs={"literal_binds": True}))
        except Exception:  # literal rendering is not possible for every bound type
            return str(clause.compile(dialect=_PG))
    return str(clause)


def render_type(type_: Any) -> str | None:
    """The PostgreSQL spelling of a SQLAlchemy type, e.g. ``VARCHAR(200)``; None when unknown."""
    if type_ is None:
        return None
    if isinstance(type_, type):
        try:
            type_ = type_()
        except Exception:
            return str(type_.__name__).upper()
    if isinstance(type_, TypeEngine):
        try:
            return str(type_.compile(dialect=_PG)).upper()
        except Exception:  # a custom type without a PostgreSQL rendering
            return type(type_).__name__.upper()
    return str(type_).upper()


def _str(value: object) -> str | None:
    # Alembic types constraint names as str | _NoneName | None; only real strings are names.
    return value if isinstance(value, str) else None


def _not_null_check_column(condition: str) -> str | None:
    match = NOT_NULL_CHECK_RE.match(condition)
    return match.group(1) if match else None


def _column_default(column: Any) -> tuple[bool, str | None]:
    """(has a server-side value for existing rows, the volatile expression if any)."""
    if getattr(column, "identity", None) is not None:
        return True, "GENERATED AS IDENTITY"
    computed = getattr(column, "computed", None)
    if computed is not None:
        if getattr(computed, "persisted", None) is not False:
            return True, "GENERATED ALWAYS AS (...) STORED"
        return True, None
    default = column.server_default
    if default is None:
        return False, None
    kind = type(default).__name__
    if kind == "Identity":
        return True, "GENERATED AS IDENTITY"
    if kind == "Computed":
        return True, "GENERATED ALWAYS AS (...) STORED"
    text = render(getattr(default, "arg", default))
    return True, (text if VOLATILE_RE.search(text) else None)


def from_alembic(operation: Any, sql: str = "") -> list[OperationDict]:
    """Translate one Alembic ``MigrateOperation`` into operation dicts.

    ``ExecuteSQLOp`` becomes ``raw_sql`` (deployflow parses it); an unknown operation class
    becomes ``other`` so a new Alembic operation never crashes the analysis.
    """
    o = alembic_ops
    schema = getattr(operation, "schema", None)
    table = qualified(getattr(operation, "table_name", None), schema)
    if isinstance(operation, o.ExecuteSQLOp):
        return [_op("raw_sql", sql=render(operation.sqltext))]
    if isinstance(operation, o.AddColumnOp):
        column = operation.column
        has_default, volatile = _column_default(column)
        result = [
            _op("add_column", table, column.name, sql,
                nullable=bool(column.nullable) and column.primary_key is not True,
                has_default=has_default, volatile_default=volatile,
                new_type=render_type(column.type))
        ]  # fmt: skip
        # Column(index=True) / Column(unique=True): Alembic builds the index (or the unique
        # constraint's index) in the same step, without CONCURRENTLY.
        if column.index:
            result.append(
                _op("create_index", table, column.name, sql, unique=bool(column.unique),
                    detail="Column(index=True)")
            )  # fmt: skip
        elif column.unique:
            result[0]["unique"] = True
        return result
    if isinstance(operation, o.DropColumnOp):
        return [_op("drop_column", table, operation.column_name, sql)]
    if isinstance(operation, o.AlterColumnOp):
        return _from_alter_column(operation, table, sql)
    if isinstance(operation, o.CreateTableOp):
        columns = [
            [getattr(c, "name", ""), render_type(getattr(c, "type", None)) or ""]
            for c in operation.columns
            if isinstance(getattr(c, "name", None), str) and hasattr(c, "type")  # columns
        ]
        return [
            _op("create_table", table, sql=sql, columns=columns,
                tables=_referenced_tables(operation.columns))
        ]  # fmt: skip
    if isinstance(operation, o.DropTableOp):
        return [_op("drop_table", table, sql=sql)]
    if isinstance(operation, o.RenameTableOp):
        return [_op("rename_table", table, sql=sql, new_name=operation.new_table_name)]
    if isinstance(operation, (o.CreateIndexOp, o.DropIndexOp)):
        kw = operation.kw or {}
        kind = "create_index" if isinstance(operation, o.CreateIndexOp) else "drop_index"
        return [
            _op(kind, table, sql=sql, concurrently=bool(kw.get("postgresql_concurrently")),
                constraint=_str(operation.index_name),
                unique=bool(getattr(operation, "unique", False)))
        ]  # fmt: skip
    if CreateExcludeConstraintOp is not None and isinstance(operation, CreateExcludeConstraintOp):
        return [_op("add_exclusion", table, sql=sql)]
    if isinstance(operation, o.CreateForeignKeyOp):
        kw = operation.kw or {}
        return [
            _op("add_foreign_key", qualified(operation.source_table, kw.get("source_schema")),
                sql=sql, not_valid=bool(kw.get("postgresql_not_valid")),
                constraint=_str(operation.constraint_name),
                tables=[qualified(operation.referent_table, kw.get("referent_schema"))])
        ]  # fmt: skip
    if isinstance(operation, o.CreateCheckConstraintOp):
        kw = operation.kw or {}
        condition = render(operation.condition)
        return [
            _op("add_check", table, _not_null_check_column(condition), sql,
                not_valid=bool(kw.get("postgresql_not_valid")),
                constraint=_str(operation.constraint_name), expression=condition)
        ]  # fmt: skip
    if isinstance(operation, o.CreateUniqueConstraintOp):
        return [_op("add_unique", table, sql=sql, constraint=_str(operation.constraint_name))]
    if isinstance(operation, o.CreatePrimaryKeyOp):
        return [_op("add_primary_key", table, sql=sql, constraint=_str(operation.constraint_name))]
    if isinstance(operation, o.DropConstraintOp):
        kind = (
            "drop_foreign_key" if operation.constraint_type == "foreignkey" else "drop_constraint"
        )
        return [_op(kind, table, sql=sql, constraint=_str(operation.constraint_name))]
    if isinstance(operation, o.BulkInsertOp):
        target = operation.table
        return [_op("insert", qualified(getattr(target, "name", None),
                                        getattr(target, "schema", None)), sql=sql)]  # fmt: skip
    if isinstance(operation, (o.CreateTableCommentOp, o.DropTableCommentOp)):
        return [_op("comment", table, sql=sql)]
    return [_op("other", table, sql=sql, detail=type(operation).__name__)]


def _referenced_tables(items: Any) -> list[str]:
    """Tables the foreign keys among ``items`` (columns and constraints) point at."""
    found: list[str] = []
    for item in items:
        keys = list(getattr(item, "foreign_keys", None) or ()) + list(
            getattr(item, "elements", None) or ()
        )
        for key in keys:
            try:
                target = str(key.target_fullname)
            except Exception:  # a key whose target cannot be named is not counted
                continue
            table = target.rsplit(".", 1)[0]
            if table and table not in found:
                found.append(table)
    return found


def _from_alter_column(operation: Any, table: str | None, sql: str) -> list[OperationDict]:
    column = operation.column_name
    result: list[OperationDict] = []
    if operation.modify_type is not None:
        using = (getattr(operation, "kw", None) or {}).get("postgresql_using")
        result.append(
            _op("alter_column_type", table, column, sql,
                old_type=render_type(operation.existing_type),
                new_type=render_type(operation.modify_type),
                expression=str(using) if using is not None else None)
        )  # fmt: skip
    if operation.modify_nullable is False and operation.existing_nullable is not False:
        result.append(_op("set_not_null", table, column, sql))
    elif operation.modify_nullable is True:
        result.append(_op("drop_not_null", table, column, sql))
    if operation.modify_server_default is not False:
        default = operation.modify_server_default
        result.append(_op("set_default", table, column, sql, has_default=default is not None))
    if operation.modify_name is not None:
        result.append(_op("rename_column", table, column, sql, new_name=operation.modify_name))
    if operation.modify_comment is not False:
        result.append(_op("comment", table, column, sql))
    return result or [_op("other", table, column, sql, detail="alter_column")]


class _Recorder:
    def __init__(self, path: str, context: Any) -> None:
        self.path = path
        self.context = context
        self.operations: list[OperationDict] = []
        self.autocommit_depth = 0
        self.segment = 0

    def line(self) -> int | None:
        frame = inspect.currentframe()
        while frame is not None:
            if frame.f_code.co_filename == self.path:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def record(self, operation: Any, sql: str) -> None:
        line = self.line()
        for record in from_alembic(operation, sql.strip()):
            record["sql"] = record.get("sql") or sql.strip()
            record["line"] = line
            record["in_transaction"] = self.autocommit_depth == 0
            record["segment"] = self.segment
            self.operations.append(record)

    def record_sql(self, statement: Any) -> None:
        """SQL the revision ran through the bind (``op.get_bind().execute(text(...))``): it is
        checked like ``op.execute``."""
        self.operations.append(
            _op("raw_sql", sql=render(statement), line=self.line(),
                in_transaction=self.autocommit_depth == 0, segment=self.segment)
        )  # fmt: skip

    def boundary(self) -> None:
        """A commit in the middle of the revision: what follows is another transaction."""
        self.segment += 1


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, with the revision's line when the traceback has it."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the revision called exit()"
    text = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    return text.splitlines()[0] if text else type(exc).__name__


def load_module(path: str) -> Any:
    """Import a revision file as a fresh module (not registered in ``sys.modules``)."""
    name = f"deployflow_revision_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def _patched_batch(recorder: _Recorder) -> Iterator[None]:
    # Batch operations go through BatchOperations.invoke, not Operations.invoke; record them too,
    # but only for our own context (another thread's Alembic run passes straight through).
    original = BatchOperations.invoke

    def invoke(self: Any, operation: Any) -> Any:
        result = original(self, operation)
        if self.migration_context is recorder.context:
            recorder.record(operation, "")
        return result

    BatchOperations.invoke = invoke  # type: ignore[method-assign]
    try:
        yield
    finally:
        BatchOperations.invoke = original  # type: ignore[method-assign]


@contextmanager
def _offline_environment(path: str, migration_context: Any) -> Iterator[None]:
    """Alembic's ``context`` proxy for revisions that consult it (``is_offline_mode()`` is True,
    ``get_context()`` is the capture's context), as env.py would provide it."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    environment = EnvironmentContext(
        Config(), ScriptDirectory(os.path.dirname(path) or "."), as_sql=True
    )
    environment._migration_context = migration_context
    with environment:
        yield


def capture_function(module: Any, path: str, function: str) -> dict[str, Any]:
    """Run ``module.<function>()`` offline: ``{"operations", "sql", "error", "error_type"}``."""
    target = getattr(module, function, None)
    if not callable(target):
        return {"operations": [], "sql": "", "error": f"{function}() is not defined",
                "error_type": "missing"}  # fmt: skip
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    recorder = _Recorder(path, context)
    original_block = context.autocommit_block

    @contextmanager
    def tracked_block() -> Iterator[None]:
        recorder.autocommit_depth += 1
        recorder.boundary()
        try:
            with original_block():
                yield
        finally:
            recorder.autocommit_depth -= 1
            recorder.boundary()

    context.autocommit_block = tracked_block  # type: ignore[method-assign]
    error: str | None = None
    error_type: str | None = None
    on_purpose = False
    with ALEMBIC_LOCK, _patched_batch(recorder), Operations.context(context) as ops:
        original_invoke = ops.invoke

        def invoke(operation: Any) -> Any:
            before = buffer.tell()
            outcome = original_invoke(operation)
            recorder.record(operation, buffer.getvalue()[before:])
            return outcome

        # Alembic registers its proxy per class, so the instance is patched instead of subclassed.
        ops.invoke = invoke  # type: ignore[method-assign]
        bind = ops.get_bind()
        if bind is not None and not hasattr(bind, "commit"):
            # Offline the bind is a mock connection: a commit ends the transaction (a segment).
            # A bind that refuses the attribute keeps failing loudly instead.
            with contextlib.suppress(Exception):
                bind.commit = recorder.boundary  # type: ignore[method-assign]
        if bind is not None:
            # Offline the bind writes what it is given to the script; record it as well.
            original_execute = bind.execute

            def execute(statement: Any, *args: Any, **kwargs: Any) -> Any:
                recorder.record_sql(statement)
                return original_execute(statement, *args, **kwargs)

            with contextlib.suppress(Exception):
                bind.execute = execute  # type: ignore[method-assign]
        if bind is not None and not hasattr(bind, "url"):
            # Revisions that branch on `op.get_bind().engine.url` take the PostgreSQL branch.
            with contextlib.suppress(Exception):
                bind.url = make_url("postgresql://offline/offline")  # type: ignore[attr-defined]
        try:
            # `from alembic import context` in a revision: offline mode, an empty config.
            with _offline_environment(path, context):
                target()
        except (KeyboardInterrupt, CaptureInterrupted):
            raise
        except BaseException as exc:  # any failure offline, exit() included, is reported
            error, error_type = describe_exception(exc), type(exc).__name__
            on_purpose = raised_on_purpose(exc, path)
    return {"operations": recorder.operations, "sql": buffer.getvalue(), "error": error,
            "error_type": error_type, "on_purpose": on_purpose}  # fmt: skip


def raised_on_purpose(exc: BaseException, path: str) -> bool:
    """True when ``exc`` comes from a ``raise`` statement written in the revision itself (``raise
    NotImplementedError``, ``raise RuntimeError("cannot be undone")``), not from Alembic,
    SQLAlchemy or the application failing offline."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None or last.tb_frame.f_code.co_filename != path:
        return False
    import linecache

    return linecache.getline(path, last.tb_lineno).strip().startswith("raise")


def capture_through_env(env: dict[str, Any], function: str) -> dict[str, Any]:
    """Render one revision as ``alembic upgrade <down>:<rev> --sql`` (or the downgrade) would:
    through the project's own env.py in offline mode, for revisions that cannot be called
    directly (a custom signature, ``context.is_offline_mode()`` guards, env.py-provided state).

    ``env``: ``{"alembic_dir", "ini" (or None), "revision", "down_revisions"}``. The SQL comes
    back whole as one ``raw_sql_script`` operation; deployflow parses it.
    """
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    buffer = io.StringIO()
    config = (
        Config(env["ini"], output_buffer=buffer) if env.get("ini") else Config(output_buffer=buffer)
    )
    config.set_main_option("script_location", env["alembic_dir"])
    if not config.get_main_option("sqlalchemy.url"):
        # Offline the URL only picks the dialect; deployflow reads PostgreSQL.
        config.set_main_option("sqlalchemy.url", "postgresql://offline/offline")
    script = ScriptDirectory(
        env["alembic_dir"], version_locations=env.get("version_locations") or None
    )
    revision = env["revision"]
    downs = env.get("down_revisions") or []
    down = downs[0] if len(downs) == 1 else None
    if function == "upgrade":
        start, destination = down, revision

        def steps(rev: Any, _context: Any) -> Any:
            return script._upgrade_revs(destination, rev)
    else:
        start, destination = revision, down or "base"

        def steps(rev: Any, _context: Any) -> Any:
            return script._downgrade_revs(destination, rev)

    with EnvironmentContext(
        config, script, fn=steps, as_sql=True, starting_rev=start, destination_rev=destination,
        tag=None,
    ):  # fmt: skip
        script.run_env()
    sql = buffer.getvalue()
    return {"operations": [_op("raw_sql_script", sql=sql)], "sql": sql, "error": None,
            "error_type": None, "via": "env.py offline (alembic --sql)"}  # fmt: skip


def _fallback(env: dict[str, Any] | None, function: str, failure: str) -> dict[str, Any] | None:
    """The env.py rendering of ``function``, or None (with the reason kept) when it fails too."""
    if not env:
        return None
    try:
        with ALEMBIC_LOCK:
            result = capture_through_env(env, function)
    except (KeyboardInterrupt, CaptureInterrupted):
        raise
    except BaseException as exc:  # the fallback failing leaves the first failure standing
        return {"fallback_error": f"{failure}; through env.py offline: {describe_exception(exc)}"}
    result["direct_error"] = failure
    return result


def capture_file(
    path: str, functions: list[str], sys_path: list[str], env: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Import the revision at ``path`` and capture each of ``functions``; a function that cannot
    run directly is rendered through the project's env.py when ``env`` is given.

    Returns ``{"import_error", "captures": {function: capture}, "seconds"}``.
    """
    started = time.perf_counter()
    added = [entry for entry in sys_path if entry not in sys.path]
    sys.path[:0] = added
    attempts: list[str] = []
    result: dict[str, Any] = {"import_error": None, "captures": {}, "network": attempts}
    guard = network_refused(attempts)
    guard.__enter__()
    try:
        try:
            module = load_module(path)
        except (KeyboardInterrupt, CaptureInterrupted):
            raise
        except BaseException as exc:  # ImportError, SyntaxError, exit() at import time, ...
            failure = describe_exception(exc)
            result["import_traceback"] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
            )
            fallbacks = {f: _fallback(env, f, f"import failed: {failure}") for f in functions}
            if all(fb and "fallback_error" not in fb for fb in fallbacks.values()):
                result["captures"] = fallbacks
            else:
                first = next((fb for fb in fallbacks.values() if fb), None)
                result["import_error"] = (
                    first["fallback_error"].split("import failed: ", 1)[-1]
                    if first and "fallback_error" in first
                    else failure
                )
            return result
        for function in functions:
            captured = capture_function(module, path, function)
            if (
                captured["error"]
                and captured["error_type"] not in ("NotImplementedError", "missing")
                and not captured.get("on_purpose")
            ):
                fallback = _fallback(env, function, captured["error"])
                if fallback and "fallback_error" not in fallback:
                    captured = fallback
                elif fallback:
                    captured["error"] = fallback["fallback_error"]
            result["captures"][function] = captured
    finally:
        guard.__exit__(None, None, None)
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)
        result["seconds"] = time.perf_counter() - started
    return result


def _warm_up() -> None:
    """One throwaway capture, so the lazy imports and caches of Alembic and SQLAlchemy are not
    charged to the first revision's deadline."""
    import types

    from alembic import op
    from sqlalchemy import Column, Integer

    def upgrade() -> None:
        op.add_column("warm_up", Column("c", Integer, nullable=True))
        op.execute("SELECT 1")

    result = capture_function(types.SimpleNamespace(upgrade=upgrade), "<warm-up>", "upgrade")
    if result["error"] or len(result["operations"]) != 2:
        raise RuntimeError(
            f"this interpreter cannot run the capture (SQLAlchemy {environment()['sqlalchemy']}, "
            f"Alembic {environment()['alembic']}): {result['error'] or result['operations']}"
        )


def environment() -> dict[str, str]:
    """The versions this capture runs on (shown in the report)."""
    import alembic
    import sqlalchemy

    return {
        "python": ".".join(str(part) for part in sys.version_info[:3]),
        "sqlalchemy": str(sqlalchemy.__version__),
        "alembic": str(getattr(alembic, "__version__", "unknown")),
    }


def serve(requests: Any, protocol: Any) -> None:
    """Answer capture requests, one JSON line each, until stdin closes.

    The first line written is ``{"ready": true}``: the imports are done, deadlines may start.
    """
    # Before the redirection, so a capture this interpreter cannot run says why on stderr.
    _warm_up()
    scratch = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker
    os.dup2(scratch.fileno(), 1)
    os.dup2(scratch.fileno(), 2)
    protocol.write(json.dumps({"ready": True, **environment()}) + "\n")
    protocol.flush()
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        scratch.seek(0)
        scratch.truncate()
        # Every thread of the worker is guarded: a revision may start threads of its own.
        _GUARD_EVERY_THREAD[:] = [[]]
        try:
            result = capture_file(
                request["path"], request["functions"], request["sys_path"], request.get("env")
            )
        except (KeyboardInterrupt, CaptureInterrupted):
            raise
        except BaseException as exc:  # the worker itself must answer, whatever happened
            result = {"import_error": describe_exception(exc), "captures": {}}
        result["network"] = sorted({*result.get("network", []), *_GUARD_EVERY_THREAD[0]})
        sys.stdout.flush()
        sys.stderr.flush()
        scratch.seek(0)
        result["output"] = scratch.read(65536).decode("utf-8", "replace")
        protocol.write(json.dumps(result, default=str) + "\n")
        protocol.flush()


def main() -> None:
    """Script entry point: keep the original stdout for the protocol, then serve."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8",
                                  line_buffering=True)  # fmt: skip
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8",
                                  line_buffering=True)  # fmt: skip
    serve(sys.stdin, protocol)


if __name__ == "__main__":
    main()
