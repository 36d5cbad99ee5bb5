"""Long-running sandbox servers (HAProxy, Prometheus) as managed child processes.

The process primitives (records, liveness, group termination) live in ``deployflow.processes``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.processes import (
    ProcessRecord,
    register_child,
    stop_recorded,
    tail,
    terminate,
    write_json_atomic,
)


class ManagedProcess:
    """A long-running child (HAProxy, Prometheus) with its log and a pid record on disk.

    Args:
        name: Short name used in messages ("haproxy").
        argv: Command to run, without a shell.
        log_path: File receiving stdout and stderr.
        record_path: JSON record of the running process, for cleanup after a crash.
        env: Full environment for the child; None inherits ours.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        record_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.record_path = record_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.record: ProcessRecord | None = None

    def start(self) -> None:
        """Stop a leftover from an earlier run, then start the child in its own session."""
        stop_recorded(self.record_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        register_child(self.proc)
        self.record = ProcessRecord.of(self.proc.pid)
        write_json_atomic(self.record_path, self.record.to_json())

    def exited(self) -> bool:
        """True once the child has exited (after ``start``)."""
        return self.proc is not None and self.proc.poll() is not None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the child's output."""
        return tail(self.log_path, lines=lines)

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM the child's process group, SIGKILL after ``timeout``; remove the record."""
        if self.record is not None:
            terminate(self.record, timeout=timeout)
        if self.proc is not None:
            self.proc.wait(timeout=timeout)  # reap it; terminate() saw it exit
        self.record_path.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        """Process id while it runs (None before start)."""
        return self.proc.pid if self.proc is not None else None

    def start_and_wait(
        self,
        ready: Callable[[], object],
        *,
        timeout: float,
        what: str,
        error: type[Exception],
        interval: float = 0.05,
    ) -> None:
        """Start, then poll ``ready`` until it is truthy; stop and raise ``error`` with the
        server's own output when it exits or is not ready in time."""
        self.start()
        self.wait_until(ready, timeout=timeout, what=what, error=error, interval=interval)

    def wait_until(
        self,
        ready: Callable[[], object],
        *,
        timeout: float,
        what: str,
        error: type[Exception],
        interval: float = 0.05,
    ) -> None:
        """Poll ``ready`` of a started child until it is truthy; stop it and raise ``error``
        with its own output when it exits or is not ready in time."""
        try:
            wait_for(
                lambda: self.exited() or ready(), timeout=timeout, interval=interval, what=what
            )
        except DeadlineExceeded as exc:
            self.stop()
            raise error(f"{exc}; {self.name} output:\n{self.log_tail()}") from exc
        if self.exited():
            output = self.log_tail()
            self.stop()
            raise error(f"{self.name} exited at start:\n{output}")


class LocalServer:
    """A sandbox server run as one ``ManagedProcess``: its ``pid``, ``stop``, and a ``with`` block
    that starts it on entry and stops it on exit. Subclasses set ``_process`` and define
    ``start``; ``stop_timeout`` is how long the server gets to exit on SIGTERM."""

    _process: ManagedProcess
    stop_timeout: float = 5.0

    @property
    def pid(self) -> int | None:
        """Process id of the server while it runs."""
        return self._process.pid

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server; safe to call twice."""
        self._process.stop(timeout=self.stop_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
