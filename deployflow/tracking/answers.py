"""Whether the tracking database answers, as one deploy's ledger has seen it.

A deploy holds its lease in the tracking database and records every stage there. When the
database stops answering mid-deploy, the deploy can neither renew the lease nor record what it
does, and after one lease period the next deploy would take it for dead and reconcile it. So a
deploy whose database has not answered for ``silence_grace`` (one renewal period, 5 s at the
default 30 s lease) rolls back at its next look: the restore happens well inside the lease,
while no other deploy can have taken the service over (``deployflow.fencing``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Renewals per lease period (``deployflow.tracking.lease``): a database silent for one renewal
# period has missed a renewal; the deploy then still holds its lease for most of a period.
RENEWALS_PER_LEASE = 6


def silence_grace(lease_seconds: float) -> float:
    """How long the tracking database may fail every query before the deploy rolls back: one
    renewal period of its lease."""
    return lease_seconds / RENEWALS_PER_LEASE


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` means the tracking database did not take the query: unreachable,
    connection lost, timed out, or (SQLite) locked, full or unwritable. A constraint violation
    or a missing row is an answer."""
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.DBAPIError):
        return exc.connection_invalidated or isinstance(
            exc, sa.OperationalError | sa.InterfaceError
        )
    return isinstance(exc, sa.DisconnectionError | sa.TimeoutError | OSError)


def failure_line(exc: BaseException) -> str:
    """The driver's own first line (``connection failed: ... Connection refused``), without
    SQLAlchemy's wrapping and its link; the type's name when it says nothing."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return (lines[0].strip() if lines else "")[:300] or type(cause).__name__


class Answers:
    """The tracking database's answers to one process's queries: since when every query has
    failed (None while it answers) and the last failure, in words. Thread-safe (the lease
    renews from its own thread)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self.error = ""

    def answered(self) -> None:
        with self._lock:
            self._failing_since = None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self._failing_since is None:
                self._failing_since = self._clock()
            self.error = failure_line(exc)

    def silent_for(self) -> float:
        """Seconds since the first of the failures in a row; 0 while it answers."""
        with self._lock:
            since = self._failing_since
        return 0.0 if since is None else self._clock() - since

    def stopped(self, grace: float) -> str | None:
        """Why the deploy must stop, in words, once every query has failed for ``grace``
        seconds; None before."""
        silent = self.silent_for()
        if silent <= 0.0 or silent < grace:
            return None
        return f"the tracking database stopped answering: {self.error} (for {silent:.0f} s)"


def tracking_silence_reason(silent: str) -> str:
    """Why a deploy rolls back when its tracking database stopped answering (``silent``, from
    ``Answers.stopped``), in words."""
    return (
        f"{silent}; this deploy can neither renew its lease nor record what it does, so it puts "
        "traffic back on the stable version while its lease still holds"
    )


def keep_trying(
    action: Callable[[], None],
    patience: float,
    *,
    interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> BaseException | None:
    """Run ``action`` (a write to the tracking database) until it is taken, trying again every
    ``interval`` seconds for up to ``patience`` seconds while the database does not answer.
    Returns None once taken, else the last failure. A failure that is an answer (a bug, a
    constraint) is raised at once: waiting would not change it."""
    deadline = clock() + patience
    while True:
        try:
            action()
        except Exception as exc:
            if not unanswered(exc):
                raise
            if clock() + interval > deadline:
                return exc
            sleep(interval)  # a pause between attempts, not synchronisation
        else:
            return None
