"""A deploy's lease: alive while renewed, dead once it lapses; renewals stop with the deploy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployflow.fakes.backends import InMemoryRouter
from deployflow.fencing import FencedRouter, LeaseLost, lease_lost
from deployflow.polling import wait_for
from deployflow.providers.base import Instance
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


def fenced(tmp_path, seconds: float = 30.0) -> tuple[Ledger, int, Lease, FencedRouter]:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    row = ledger.start(ReleaseOutcome(service="shop", environment="prod", version="v2"))
    lease = Lease(ledger, row, seconds=seconds)
    router = InMemoryRouter()
    return ledger, row, lease, FencedRouter(router, lease.check)


def test_a_deploy_holding_its_lease_moves_traffic(tmp_path) -> None:
    ledger, row, _lease, router = fenced(tmp_path)
    v1 = Instance("v1", "127.0.0.1", 1)
    router.set_split(v1, None, 0)
    assert router.state().stable == v1.address
    assert ledger.renew(row, 30.0)


def test_a_process_that_wakes_after_its_lease_touches_no_traffic(tmp_path) -> None:
    """Paused past its lease (SIGSTOP, a frozen VM): the local clock says so before any query,
    and the lease cannot be revived by a late renewal."""
    _ledger, _row, lease, router = fenced(tmp_path)
    lease._renewed_at -= 31.0  # what the monotonic clock shows after a 31 s pause
    with pytest.raises(LeaseLost, match="no renewal for 31 s, longer than its 30 s lease"):
        router.set_split(Instance("v1", "127.0.0.1", 1), None, 0)
    assert router.inner.changes == []  # type: ignore[attr-defined]
    assert lease_lost(router)
    assert router.state().stable is None  # reading is still allowed


def test_a_deploy_another_run_reconciled_touches_no_traffic(tmp_path) -> None:
    ledger, row, _lease, router = fenced(tmp_path)
    ledger.close(row, "failed", "interrupted; reconciled by a later run")
    with pytest.raises(LeaseLost, match="no longer shows it running"):
        router.promote(Instance("v2", "127.0.0.1", 2))
    assert router.inner.changes == []  # type: ignore[attr-defined]
    assert not ledger.renew(row, 30.0)  # a closed row is not revived


def test_a_lapsed_heartbeat_is_not_renewed(tmp_path) -> None:
    ledger, row, _lease, _router = fenced(tmp_path)
    with ledger._session() as s:
        repository.update_deployment(s, row, heartbeat_at=datetime.now(UTC) - timedelta(seconds=60))
    assert not ledger.renew(row, 30.0)
    assert not ledger.holds_lease(row, 30.0)
    assert ledger.renew(row)  # the unconditional first renewal of a new lease


def test_a_deploy_that_lost_its_lease_does_not_write_its_ending_over_the_reconciled_row(
    tmp_path,
) -> None:
    """Paused past its lease, a deploy wakes after the next deploy's reconciler closed its row
    (saying what it did to the traffic): the woken deploy's ending is not written over it."""
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    outcome = ReleaseOutcome(service="shop", environment="prod", version="v10")
    outcome.deployment_id = ledger.start(outcome)
    reconciled = "interrupted; all traffic on v1, stopped v10"
    ledger.close(outcome.deployment_id, "failed", reconciled)  # what the next deploy did

    outcome.status, outcome.message = "failed", "not rolled back: this deploy lost its lease"
    assert ledger.record_outcome(outcome, outcome.message) is False

    with ledger._sessions() as s:
        row = repository.get_deployment(s, outcome.deployment_id)
        assert (row.status, row.summary) == ("failed", reconciled)


def test_a_deploy_still_holding_its_row_records_its_ending(tmp_path) -> None:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    outcome = ReleaseOutcome(service="shop", environment="prod", version="v2")
    outcome.deployment_id = ledger.start(outcome)
    outcome.status, outcome.message = "succeeded", "v2 serves all the traffic"
    assert ledger.record_outcome(outcome, outcome.message) is True
    with ledger._sessions() as s:
        row = repository.get_deployment(s, outcome.deployment_id)
        assert (row.status, row.summary) == ("succeeded", "v2 serves all the traffic")
