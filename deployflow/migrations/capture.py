"""Run a revision's upgrade() and downgrade() offline and record what they do.

Alembic's ``Operations`` run in ``as_sql`` mode against the PostgreSQL dialect: nothing touches a
database, every operation object is recorded with the SQL it renders, and a revision that needs a
live connection (a data migration calling ``op.get_bind().execute``) fails in a way that is caught
and reported as "needs review".

Alembic installs ``alembic.op`` as a process-wide proxy, so captures are serialised by a lock.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic.operations import Operations
from alembic.operations.base import BatchOperations
from alembic.runtime.migration import MigrationContext

from deployflow.migrations.operations import Operation, from_alembic

ALEMBIC_LOCK = threading.RLock()


@dataclass
class Capture:
    """What one function (upgrade or downgrade) did when run offline."""

    operations: list[Operation] = field(default_factory=list)
    sql: str = ""
    error: str | None = None


class _Recorder:
    def __init__(self, path: Path, context: MigrationContext, buffer: io.StringIO) -> None:
        self.path = str(path)
        self.context = context
        self.buffer = buffer
        self.operations: list[Operation] = []
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
        for op in from_alembic(operation, sql=sql.strip()):
            self.operations.append(
                replace(
                    op, line=line, in_transaction=self.autocommit_depth == 0, segment=self.segment,
                    sql=op.sql or sql.strip(),
                )
            )  # fmt: skip


def load_module(path: Path) -> ModuleType:
    """Import a revision file as a fresh module (not registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(f"deployflow_revision_{abs(hash(path))}", path)
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

    def invoke(self: BatchOperations, operation: Any) -> Any:
        result = original(self, operation)
        if self.migration_context is recorder.context:
            recorder.record(operation, "")
        return result

    BatchOperations.invoke = invoke  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        BatchOperations.invoke = original  # type: ignore[method-assign]


def capture(module: ModuleType, path: Path, function: str) -> Capture:
    """Run ``module.<function>()`` offline and return the operations it recorded."""
    target = getattr(module, function, None)
    if not callable(target):
        return Capture(error=f"{function}() is not defined")
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        opts={"as_sql": True, "output_buffer": buffer, "literal_binds": True},
    )
    recorder = _Recorder(path, context, buffer)
    original_block = context.autocommit_block

    @contextmanager
    def tracked_block() -> Iterator[None]:
        recorder.autocommit_depth += 1
        recorder.segment += 1
        try:
            with original_block():
                yield
        finally:
            recorder.autocommit_depth -= 1
            recorder.segment += 1

    context.autocommit_block = tracked_block  # type: ignore[method-assign]
    result = Capture()
    with ALEMBIC_LOCK, _patched_batch(recorder), Operations.context(context) as ops:
        original_invoke = ops.invoke

        def invoke(operation: Any) -> Any:
            before = buffer.tell()
            outcome = original_invoke(operation)
            recorder.record(operation, buffer.getvalue()[before:])
            return outcome

        # Alembic registers its proxy per class, so the instance is patched instead of subclassed.
        ops.invoke = invoke  # type: ignore[method-assign]
        try:
            target()
        except NotImplementedError as exc:
            result.error = f"NotImplementedError: {exc}" if str(exc) else "NotImplementedError"
        except Exception as exc:  # any failure offline is reported, never raised
            result.error = f"{type(exc).__name__}: {exc}".strip()
    result.operations = recorder.operations
    result.sql = buffer.getvalue()
    return result
