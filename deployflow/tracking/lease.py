"""A running deploy's lease: renewed in the tracking database every few seconds while the deploy
runs, so the next deploy of the same service tells a dead run from a live one without asking any
Prefect server (several may share one tracking database), and within seconds of the death.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from deployflow.fencing import LeaseLost, LeaseUnconfirmed
from deployflow.polling import Repeat
from deployflow.tracking.answers import RENEWALS_PER_LEASE

if TYPE_CHECKING:
    from deployflow.tracking.ledger import Ledger

LEASE_SECONDS_ENV = "DEPLOYFLOW_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 30.0

logger = logging.getLogger(__name__)


def lease_seconds() -> float:
    """How long a lease holds without renewal (``DEPLOYFLOW_LEASE_SECONDS``, default 30)."""
    raw = os.environ.get(LEASE_SECONDS_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_LEASE_SECONDS
    except ValueError:
        return DEFAULT_LEASE_SECONDS
    return value if value >= 1.0 else DEFAULT_LEASE_SECONDS


def lease_alive(heartbeat_at: datetime | None, now: datetime, seconds: float) -> bool:
    """Whether a run whose last heartbeat was ``heartbeat_at`` still holds its lease at ``now``.

    No heartbeat at all means no live run holds it (a row written by a run that died before its
    first renewal, or by hand).
    """
    if heartbeat_at is None:
        return False
    return now - heartbeat_at < timedelta(seconds=seconds)


class Lease:
    """Renew the lease of one deploy row in a background thread while the block runs.

    A failed renewal is logged, not raised: the deploy goes on, and if renewals keep failing the
    next deploy will treat this one as dead, which is the safe side only when it is dead; hence
    several renewals per lease period.

    A lease once lost stays lost: a renewal only extends a lease still held (the row running,
    its heartbeat younger than the lease), so a process that wakes up after a pause longer than
    its lease cannot revive it. ``check`` is the fencing check every action of the deploy makes
    first (``deployflow.fencing``).
    """

    def __init__(self, ledger: Ledger, deployment_id: int, seconds: float | None = None) -> None:
        self.ledger = ledger
        self.deployment_id = deployment_id
        self.seconds = seconds if seconds is not None else lease_seconds()
        self.lost: str | None = None
        self._renewed_at = time.monotonic()
        self._lock = threading.Lock()
        self._renewals = Repeat(
            self.seconds / RENEWALS_PER_LEASE, self._renew, name=f"deploy-lease-{deployment_id}"
        )

    def _lose(self, why: str) -> None:
        with self._lock:
            if self.lost is None:
                self.lost = why
                logger.error("deploy %s lost its lease: %s", self.deployment_id, why)

    def _renew(self) -> bool:
        if self._local_lapse():
            return True
        try:
            renewed = self.ledger.renew(self.deployment_id, self.seconds)
        except Exception as exc:
            logger.warning("could not renew the lease of deploy %s: %s", self.deployment_id, exc)
            return False
        if not renewed:
            self._lose(
                "the tracking database no longer shows it running with a live lease (another "
                "deploy took over, or it was cut off longer than the lease)"
            )
            return True
        with self._lock:
            self._renewed_at = time.monotonic()
        return False

    def _local_lapse(self) -> bool:
        with self._lock:
            since = time.monotonic() - self._renewed_at
        if since >= self.seconds:
            self._lose(f"no renewal for {since:.0f} s, longer than its {self.seconds:g} s lease")
        return self.lost is not None

    def check(self) -> None:
        """Raise unless the tracking database confirms now that this deploy holds its lease:
        the check before anything moves traffic towards the new version (``deployflow.fencing``).
        The local clock first (a process that was paused knows at once), then the database.

        Raises:
            LeaseLost: another deploy may own the traffic now; this one must not act.
            LeaseUnconfirmed: the database did not answer; the lease may hold, but promoting on
                a lease nobody can check is not safe.
        """
        self._check(confirmed=True)

    def check_restore(self) -> None:
        """Raise unless this deploy still holds its lease at least locally: the check before
        traffic goes back on the stable version or a version is stopped. A database that does
        not answer is not a lost lease while the local one holds (nobody else can take the
        service over meanwhile); one known to be failing is not waited on again.

        Raises:
            LeaseLost: another deploy may own the traffic now; this one must not act.
        """
        self._check(confirmed=False)

    def _check(self, *, confirmed: bool) -> None:
        if not self._local_lapse() and (confirmed or not self.ledger.answers.silent_for()):
            try:
                holds = self.ledger.holds_lease(self.deployment_id, self.seconds)
            except Exception as exc:
                logger.warning(
                    "could not check the lease of deploy %s: %s", self.deployment_id, exc
                )
                if confirmed:
                    raise LeaseUnconfirmed(
                        "the tracking database did not answer the lease check "
                        f"({self.ledger.answers.error or type(exc).__name__}): nothing moves "
                        "towards the new version on a lease nobody can confirm"
                    ) from None
            else:
                if not holds:
                    self._lose("the tracking database no longer shows it running with a live lease")
        if self.lost is not None:
            raise LeaseLost(
                f"this deploy lost its lease in the tracking database ({self.lost}); it touches "
                "no traffic from here, and the next deploy reconciles what it left"
            )

    def __enter__(self) -> Lease:
        self.ledger.renew(self.deployment_id)
        self._renewed_at = time.monotonic()
        self._renewals.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._renewals.__exit__(exc_type, exc, tb)
