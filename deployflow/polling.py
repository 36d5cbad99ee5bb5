"""Poll a condition with a deadline: the one way deployflow waits for something to become true."""

from __future__ import annotations

import time
from collections.abc import Callable
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
