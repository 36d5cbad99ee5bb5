"""A deploy's lease: alive while renewed, dead once it lapses; renewals stop with the deploy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployflow.polling import wait_for
from deployflow.release import ReleaseOutcome
from deployflow.tracking import repository
from deployflow.tracking.lease import Lease, lease_alive, lease_seconds
from deployflow.tracking.ledger import Ledger

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("heartbeat", "alive"),
    [(None, False), (NOW, True), (NOW - timedelta(seconds=29), True),
     (NOW - timedelta(seconds=30), False), (NOW - timedelta(hours=2), False)],
)  # fmt: skip
def test_a_lease_holds_for_its_period_after_the_last_heartbeat(heartbeat, alive) -> None:
    assert lease_alive(heartbeat, NOW, 30.0) is alive


@pytest.mark.parametrize(("raw", "seconds"), [("", 30.0), ("4", 4.0), ("x", 30.0), ("0", 30.0)])
def test_the_lease_period_comes_from_the_environment(monkeypatch, raw, seconds) -> None:
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", raw)
    assert lease_seconds() == seconds


def heartbeat(ledger: Ledger, deployment_id: int) -> datetime:
    with ledger._sessions() as s:
        value = repository.get_deployment(s, deployment_id).heartbeat_at
    assert value is not None
    return value


def test_a_lease_is_renewed_while_held_and_not_after(tmp_path) -> None:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    row = ledger.start(ReleaseOutcome(service="shop", environment="prod", version="v2"))
    created = heartbeat(ledger, row)
    lease = Lease(ledger, row, seconds=0.6)  # renewed every 0.1 s
    with lease:
        wait_for(
            lambda: heartbeat(ledger, row) > created or None,
            timeout=5,
            interval=0.05,
            what="a renewal",
        )
    assert not lease._renewals.running  # renewals end with the deploy
