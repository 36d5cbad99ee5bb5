"""Waiting and repeating: poll a condition with a deadline (the one way deployflow waits for
something to become true), and repeat a step in the background while a block runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The condition did not hold before the deadline."""


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something other than None or False, or the deadline passes.

    Exceptions raised by ``probe`` count as "not yet"; the last one is chained to the timeout error
    so a failure to start explains itself.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # a probe that raises means "not ready yet"
            last_error = exc
            value = None
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"{what} not reached within {timeout:.1f}s") from last_error
        time.sleep(interval)


class Repeat:
    """Call ``step`` every ``interval`` seconds in a daemon thread while the ``with`` block runs.

    The first call comes one interval after the block starts. ``step`` returning True ends the
    repetition early; an exception from it is the caller's to handle (catch it inside ``step``: an
    escaping one ends the thread). Leaving the block stops the thread and waits up to
    ``join_timeout`` seconds for a step in flight.
    """

    def __init__(
        self,
        interval: float,
        step: Callable[[], bool | None],
        *,
        name: str,
        join_timeout: float = 5.0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self.step = step
        self.join_timeout = join_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def running(self) -> bool:
        """True while the thread may still call ``step``."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.step():
                return

    def __enter__(self) -> Repeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=self.join_timeout)


def within_deadline(call: Callable[[], T], *, seconds: float, what: str) -> T:
    """``call()``'s answer, or DeadlineExceeded once ``seconds`` have passed without one.

    The call runs in a daemon thread that this one waits for with a deadline, so a call that hangs
    (a blocking read, a wedged subprocess pipe) cannot hold the caller past it: the caller goes
    on, and the abandoned thread ends with the process. For work that already runs in a worker
    thread, where a Prefect task timeout cannot interrupt a blocking call. ``call``'s own
    exceptions are raised here.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller, whatever it is
            failure.append(exc)

    worker = threading.Thread(target=run, name=f"deployflow-deadline-{what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise DeadlineExceeded(f"{what} did not finish within {seconds:g}s")
    if failure:
        raise failure[0]
    return outcome[0]
