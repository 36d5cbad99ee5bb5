"""Run each revision's upgrade() and downgrade() offline, isolated, within a deadline.

The recording itself is ``capture_script`` (standalone, so it can run under the service's own
interpreter). Two ways to run it:

- ``InProcessCapture`` (the default, deployflow's interpreter): each revision runs in a thread
  of its own, its print() output routed into the result, ``exit()`` caught; at its deadline
  ``CaptureInterrupted`` is raised in that thread. One blocked outside Python (a socket, a sleep)
  is left behind and the remaining revisions go to a worker process, as below.
- ``SubprocessCapture`` (``migrations.python`` / ``--python``): one worker process
  ``<python> -I capture_script.py`` answers a request per revision; a revision past its deadline
  or one that kills the worker (``os._exit``, a crash) becomes a failure of that revision, and a
  fresh worker takes the next one.

Either way a failure is data (``RevisionCapture.failure``), never an exception.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deployflow.migrations import capture_script
from deployflow.migrations.capture_script import ALEMBIC_LOCK, CaptureInterrupted
from deployflow.migrations.operations import (
    Operation,
    normalise_name,
    operation_from_dict,
    parse_sql,
)

__all__ = [
    "ALEMBIC_LOCK",
    "Capture",
    "CaptureRunner",
    "InProcessCapture",
    "RevisionCapture",
    "SubprocessCapture",
    "capture_runner",
]

SCRIPT = Path(capture_script.__file__).resolve()
_OUTPUT_LIMIT = 4000
_START_TIMEOUT = 60.0
_GRACE = 1.0  # how long a revision past its deadline has to leave Python code


@dataclass
class Capture:
    """What one function (upgrade or downgrade) did when run offline."""

    operations: list[Operation] = field(default_factory=list)
    sql: str = ""
    error: str | None = None
    error_type: str | None = None
    # How it was read when not by calling the function: "env.py offline (alembic --sql)".
    via: str | None = None
    direct_error: str | None = None
    # The error came from a `raise` written in the revision (an intended refusal).
    on_purpose: bool = False


@dataclass
class RevisionCapture:
    """One revision: its functions' captures, or why it could not be read at all."""

    failure: str | None = None
    captures: dict[str, Capture] = field(default_factory=dict)
    output: str = ""
    seconds: float = 0.0
    # Network attempts the revision made while read (each refused), e.g. "connect to 10.0.0.5:6379".
    network: list[str] = field(default_factory=list)

    def get(self, function: str) -> Capture:
        """The capture of ``function`` (empty when it was not run)."""
        return self.captures.get(function, Capture())


class CaptureRunner(Protocol):
    """Captures revisions one at a time."""

    # True when a revision was left blocked in this process (it may hold Alembic's lock).
    abandoned: bool
    # The versions the capture runs on: {"python", "sqlalchemy", "alembic"}.
    environment: dict[str, str]

    def capture(self, path: Path, functions: list[str]) -> RevisionCapture:
        """Import ``path`` and run ``functions`` offline."""

    def close(self) -> None:
        """Release what the runner holds (a worker process)."""


def _script_operations(sql: str) -> list[Operation]:
    """Operations of SQL rendered through env.py: COMMIT/BEGIN split transactions, and the
    bookkeeping of alembic_version is not the revision's."""
    operations: list[Operation] = []
    segment, in_transaction = 0, True
    for op in parse_sql(sql):
        if op.kind == "transaction":
            segment += 1
            in_transaction = op.detail not in ("COMMIT", "END")
            continue
        if normalise_name(op.table) == "alembic_version":
            continue
        operations.append(replace(op, segment=segment, in_transaction=in_transaction))
    return operations


def _to_capture(data: dict[str, Any]) -> Capture:
    operations: list[Operation] = []
    for record in data.get("operations", []):
        op = operation_from_dict(record)
        if op.kind == "raw_sql_script":
            operations += _script_operations(op.sql)
        elif op.kind == "raw_sql":
            # Raw SQL is parsed here (PostgreSQL's parser), keeping where and how it ran.
            operations += [
                replace(parsed, line=op.line, in_transaction=op.in_transaction,
                        segment=op.segment)
                for parsed in parse_sql(op.sql)
            ]  # fmt: skip
        else:
            operations.append(op)
    return Capture(
        operations, data.get("sql", ""), data.get("error"), data.get("error_type"),
        data.get("via"), data.get("direct_error"), bool(data.get("on_purpose")),
    )  # fmt: skip


def _to_revision_capture(data: dict[str, Any]) -> RevisionCapture:
    failure = data.get("import_error")
    return RevisionCapture(
        failure=f"import failed: {failure}" if failure else None,
        captures={name: _to_capture(c) for name, c in data.get("captures", {}).items()},
        output=str(data.get("output", ""))[:_OUTPUT_LIMIT],
        seconds=float(data.get("seconds", 0.0)),
        network=[str(item) for item in data.get("network") or ()],
    )


def _raise_in_thread(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _ThreadRoutedStream:
    """Stands in for sys.stdout/sys.stderr while revisions run: what a capturing thread writes
    goes to its revision's buffer, what any other thread writes goes where it always went."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.buffers: dict[int, io.StringIO] = {}

    def write(self, text: str) -> int:
        buffer = self.buffers.get(threading.get_ident())
        return (buffer if buffer is not None else self.original).write(text)

    def flush(self) -> None:
        if threading.get_ident() not in self.buffers:
            self.original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.original, name)


_ROUTING = threading.Lock()
# Capture threads left blocked outside Python (they may hold Alembic's process-wide lock).
_ABANDONED: list[threading.Thread] = []


@contextlib.contextmanager
def _routed_output(buffer: io.StringIO) -> Iterator[None]:
    """Route this thread's writes to sys.stdout and sys.stderr into ``buffer``."""
    me = threading.get_ident()
    with _ROUTING:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _ThreadRoutedStream):
                stream = _ThreadRoutedStream(stream)
                setattr(sys, name, stream)
            stream.buffers[me] = buffer
    try:
        yield
    finally:
        with _ROUTING:
            for name in ("stdout", "stderr"):
                stream = getattr(sys, name)
                if isinstance(stream, _ThreadRoutedStream):
                    stream.buffers.pop(me, None)
                    if not stream.buffers:
                        setattr(sys, name, stream.original)


class InProcessCapture:
    """Capture in deployflow's own interpreter (see the module docstring for the limits).

    Each revision runs in a thread of its own. At its deadline ``CaptureInterrupted`` is raised
    in that thread (again every 50 ms, so a bare ``except:`` cannot swallow it); a thread that
    does not stop within a second is blocked outside Python (a socket, a sleep): it is left
    behind, ``abandoned`` is set, and the remaining revisions go to a worker process of this
    interpreter (``SubprocessCapture``), which can be killed.
    """

    def __init__(
        self, *, timeout: float, sys_path: list[str], env: dict[str, Any] | None = None,
        cwd: Path | None = None,
    ) -> None:  # fmt: skip
        self.timeout = timeout
        self.sys_path = sys_path
        self.cwd = cwd or (Path(sys_path[-1]) if sys_path else Path.cwd())
        self.env = env
        self.abandoned = False
        self.environment = capture_script.environment()
        self._process: SubprocessCapture | None = None

    def capture(self, path: Path, functions: list[str]) -> RevisionCapture:
        """Import ``path`` and run ``functions``, output redirected, within the deadline."""
        with _ROUTING:
            _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()]
            stuck = bool(_ABANDONED)
        if stuck and self._process is None:
            # A revision of an earlier check is still blocked here, holding Alembic's lock.
            self.abandoned = True
            self._process = self._worker_process()
        if self._process is not None:
            return self._process.capture(path, functions)
        output = io.StringIO()
        guard = threading.Lock()
        box: dict[str, Any] = {"done": False, "data": None, "timed_out": False}
        env = self._env_for(path)

        def work() -> None:
            me = threading.get_ident()
            try:
                with _routed_output(output):
                    try:
                        box["data"] = capture_script.capture_file(
                            str(path), functions, self.sys_path, env
                        )
                    except CaptureInterrupted:
                        box["timed_out"] = True
                    while True:
                        # Once ``done`` is set under the guard no deadline comes any more; one
                        # raised just before may land here, hence the retry.
                        try:
                            with guard:
                                box["done"] = True
                                _raise_in_thread(me, None)
                            break
                        except CaptureInterrupted:
                            box["timed_out"] = True
            except CaptureInterrupted:  # landed while leaving the output routing
                box["timed_out"] = True

        thread = threading.Thread(target=work, name=f"capture {path.name}", daemon=True)
        started = time.perf_counter()
        thread.start()
        thread.join(self.timeout)
        grace = time.monotonic() + _GRACE
        while thread.is_alive() and time.monotonic() < grace:
            with guard:
                if not box["done"] and thread.ident is not None:
                    _raise_in_thread(thread.ident, CaptureInterrupted)
            thread.join(0.05)
        seconds = time.perf_counter() - started
        if thread.is_alive():
            with guard:
                # Left to finish on its own, quietly: no deadline pending when it resumes.
                box["done"] = True
                if thread.ident is not None:
                    _raise_in_thread(thread.ident, None)
            self.abandoned = True
            with _ROUTING:
                _ABANDONED.append(thread)
            self._process = self._worker_process()
            return RevisionCapture(
                failure=f"timed out after {self.timeout:g}s (migrations.revision_timeout), "
                "blocked outside Python; the revisions after it are captured in a separate "
                "process",
                output=output.getvalue()[:_OUTPUT_LIMIT], seconds=seconds,
            )  # fmt: skip
        if box["timed_out"] or box["data"] is None:
            return RevisionCapture(
                failure=f"timed out after {self.timeout:g}s (migrations.revision_timeout)",
                output=output.getvalue()[:_OUTPUT_LIMIT], seconds=seconds,
            )  # fmt: skip
        result = _to_revision_capture(box["data"])
        result.output = output.getvalue()[:_OUTPUT_LIMIT]
        return result

    def _worker_process(self) -> SubprocessCapture:
        return SubprocessCapture(
            sys.executable, timeout=self.timeout, sys_path=self.sys_path,
            cwd=self.cwd, env=self.env,
        )  # fmt: skip

    def _env_for(self, path: Path) -> dict[str, Any] | None:
        # In deployflow's process env.py gets no ini: a fileConfig() there would reconfigure
        # deployflow's own logging.
        env = _env_for(self.env, path)
        return {**env, "ini": None} if env else None

    def close(self) -> None:
        """End the worker process, if revisions were handed to one."""
        if self._process is not None:
            self._process.close()


class SubprocessCapture:
    """Capture in a worker process of another interpreter (the service's)."""

    def __init__(
        self, python: str, *, timeout: float, sys_path: list[str], cwd: Path,
        env: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        self.python = python
        self.timeout = timeout
        self.sys_path = sys_path
        self.cwd = cwd
        self.env = env
        self.abandoned = False  # a blocked worker is killed, never left behind
        self.environment: dict[str, str] = {}
        self._worker: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self._eof = False
        # The worker's own stderr before it redirects it (e.g. "No module named 'alembic'").
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()

    def _start(self) -> subprocess.Popen[bytes] | None:
        """The running worker, or a new one once it says it is ready (None if it never does)."""
        if self._worker is None:
            self._worker = subprocess.Popen(
                [self.python, "-I", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._stderr, cwd=self.cwd, start_new_session=True,
            )  # fmt: skip
            self._pending = b""
            # Starting the interpreter and importing Alembic is not the revision's time.
            ready = self._read_line(self._worker, time.monotonic() + _START_TIMEOUT)
            try:
                said = json.loads(ready) if ready is not None else None
            except ValueError:
                said = None
            if not isinstance(said, dict) or said.get("ready") is not True:
                self._stop()
                return None
            self.environment = {k: str(v) for k, v in said.items() if k != "ready"}
        return self._worker

    def probe(self) -> str | None:
        """Start the worker once, before any revision: None when it is ready, else why this
        interpreter cannot run the capture (its last line of stderr)."""
        try:
            worker = self._start()
        except OSError as exc:
            return f"cannot start it: {exc}"
        if worker is None:
            why = self._last_stderr_line().removeprefix(": ")
            return why or f"it did not answer within {_START_TIMEOUT:g}s"
        return None

    def _stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            worker.stdin and worker.stdin.close()
        worker.wait()
        if worker.stdout:
            worker.stdout.close()

    def _read_line(self, worker: subprocess.Popen[bytes], deadline: float) -> bytes | None:
        """One line of the worker's answer; None at EOF (``self._eof`` set) or at the deadline."""
        self._eof = False
        assert worker.stdout is not None
        fd = worker.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    return None
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._eof = True
                    return None
                self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def capture(self, path: Path, functions: list[str]) -> RevisionCapture:
        """Ask the worker for one revision; a dead or late worker is that revision's failure."""
        started = time.perf_counter()
        try:
            worker = self._start()
        except OSError as exc:
            return RevisionCapture(failure=f"cannot start {self.python}: {exc}")
        if worker is None:
            return RevisionCapture(
                failure=f"the capture process ({self.python}) did not start"
                + self._last_stderr_line()
            )
        request = {
            "path": str(path.resolve()), "functions": functions, "sys_path": self.sys_path,
            "env": _env_for(self.env, path),
        }  # fmt: skip
        try:
            assert worker.stdin is not None
            worker.stdin.write(json.dumps(request).encode() + b"\n")
            worker.stdin.flush()
        except OSError:
            pass  # the worker is gone; reading says so
        line = self._read_line(worker, time.monotonic() + self.timeout)
        if line is None:
            died = self._eof  # the pipe closed: the worker ended (exit, crash), it did not stall
            self._stop()
            why = (
                f"the capture process ({self.python}) died while reading this revision"
                + self._last_stderr_line()
                if died
                else f"timed out after {self.timeout:g}s (migrations.revision_timeout)"
            )
            return RevisionCapture(failure=why, seconds=time.perf_counter() - started)
        try:
            data = json.loads(line)
        except ValueError:
            self._stop()
            return RevisionCapture(failure=f"unreadable answer from {self.python}")
        return _to_revision_capture(data)

    def _last_stderr_line(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        self._stderr.seek(0)
        self._stderr.truncate()
        return f": {lines[-1]}" if lines else ""

    def close(self) -> None:
        """End the worker."""
        self._stop()
        self._stderr.close()


def _env_for(env: dict[str, Any] | None, path: Path) -> dict[str, Any] | None:
    """The env.py fallback request for the revision at ``path`` (None without env.py)."""
    if not env:
        return None
    revisions: dict[str, tuple[str, tuple[str, ...]]] = env["revisions"]
    found = revisions.get(str(path.resolve()))
    if found is None:
        return None
    revision, downs = found
    return {
        "alembic_dir": env["alembic_dir"], "ini": env["ini"],
        "version_locations": env["version_locations"], "revision": revision,
        "down_revisions": list(downs),
    }  # fmt: skip


def capture_runner(
    python: str | None,
    *,
    timeout: float,
    sys_path: list[str],
    cwd: Path,
    env: dict[str, Any] | None = None,
) -> CaptureRunner:
    """In-process by default; a worker of ``python`` when given.

    ``env``: ``{"alembic_dir", "ini", "version_locations", "revisions": {path: (revision,
    down_revisions)}}`` enables the fallback through the project's env.py.
    """
    if python:
        return SubprocessCapture(python, timeout=timeout, sys_path=sys_path, cwd=cwd, env=env)
    return InProcessCapture(timeout=timeout, sys_path=sys_path, env=env, cwd=cwd)
