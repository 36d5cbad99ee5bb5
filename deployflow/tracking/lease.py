"""A running deploy's lease: renewed in the tracking database every few seconds while the deploy
runs, so the next deploy of the same service tells a dead run from a live one without asking any
Prefect server (several may share one tracking database), and within seconds of the death.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from types import TracebackType

from deployflow.polling import Repeat
from deployflow.tracking.ledger import Ledger

LEASE_SECONDS_ENV = "DEPLOYFLOW_LEASE_SECONDS"
DEFAULT_LEASE_SECONDS = 30.0
# Renewals per lease period: a run must miss several before it counts as dead.
RENEWALS_PER_LEASE = 6

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
    """

    def __init__(self, ledger: Ledger, deployment_id: int, seconds: float | None = None) -> None:
        self.ledger = ledger
        self.deployment_id = deployment_id
        self.seconds = seconds if seconds is not None else lease_seconds()
        self._renewals = Repeat(
            self.seconds / RENEWALS_PER_LEASE, self._renew, name=f"deploy-lease-{deployment_id}"
        )

    def _renew(self) -> None:
        try:
            self.ledger.renew(self.deployment_id)
        except Exception as exc:
            logger.warning("could not renew the lease of deploy %s: %s", self.deployment_id, exc)

    def __enter__(self) -> Lease:
        self.ledger.renew(self.deployment_id)
        self._renewals.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._renewals.__exit__(exc_type, exc, tb)
