"""What deployflow writes under the data dir during a deploy, on a real full (or read-only)
filesystem: the slot history keeps its entries in memory and never blocks the traffic change it
records (a rollback's among them); a SQLite tracking database there stops taking writes, which
the deploy counts as its database not answering (it then rolls back while its lease holds)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deployflow.fakes.backends import InMemoryRouter
from deployflow.providers.base import Instance
from deployflow.providers.slots import RecordingRouter, SlotHistory, default_history_path
from deployflow.release import ReleaseOutcome
from deployflow.tracking.answers import silence_grace
from deployflow.tracking.ledger import Ledger
from tests.full_disk import fill, remount_read_only, tmpfs

pytestmark = pytest.mark.integration

V1, V2 = Instance("v1", "127.0.0.1", 1), Instance("v2", "127.0.0.1", 2)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_an_unwritable_slot_history_never_blocks_a_rollback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    with tmpfs(tmp_path / "data") as data:
        history = SlotHistory(default_history_path(data, "demo"))
        router = RecordingRouter(InMemoryRouter(), history)
        if fault == "full":
            fill(data)  # (an append into the last page of an existing file may still fit)
        with caplog.at_level(logging.WARNING, logger="deployflow.providers.slots"):
            router.set_split(V1, V2, 50)
            if fault == "read-only":
                assert history.path is not None
                assert history.path.exists()
                remount_read_only(data)
            router.set_split(V1, None, 0)  # the rollback
        state = router.state()
        assert (state.stable, state.canary, state.canary_weight) == (V1.address, None, 0)
        # Kept in memory for the run: the metrics still attribute the window right.
        assert [e.slots[-1].address for e in history.entries()] == [V2.address, V1.address]
        assert history.version_of(V1.address, history.entries()[-1].at) == "v1"
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        reason = "No space left on device" if fault == "full" else "Read-only file system"
        refused = 2 if fault == "full" else 1  # one warning per change the file refused
        assert len(warned) == refused, warned
        assert all(reason in w for w in warned), warned


def test_a_sqlite_tracking_database_on_a_full_disk_counts_as_not_answering(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "data", size_kib=4096) as data:
        ledger = Ledger.for_url(f"sqlite:///{data / 'deployflow.db'}")
        outcome = ReleaseOutcome(service="demo", environment="sandbox", version="v2")
        row = ledger.start(outcome)
        fill(data)
        refused: Exception | None = None
        for weight in range(1, 200):  # until the WAL needs a page the disk does not have
            try:
                ledger.traffic_moving(row, stage=0, weight=weight)
            except Exception as exc:
                refused = exc
                break
        assert refused is not None, "the full disk took every write"
        assert "disk is full" in str(refused) or "disk I/O error" in str(refused), refused
        assert ledger.answers.silent_for() > 0
        assert ledger.rollback_requested(row) is None  # reads still answer ...
        assert ledger.answers.silent_for() > 0  # ... which does not end the silence
        assert ledger.stopped_answering(0.0) is not None
        assert silence_grace(30.0) == 5.0
        ledger.engine.dispose()


def test_a_report_file_the_full_disk_refuses_is_not_left_truncated(tmp_path: Path) -> None:
    from deployflow.notify.evidence import save
    from deployflow.notify.report import Report

    report = Report("incident", "# Incident: demo v3\n" + "x" * 64_000, b"\x89PNG" * 4000)
    with tmpfs(tmp_path / "data", size_kib=64) as data:
        (data / "reports" / "demo-1").mkdir(parents=True)
        fill(data)
        with pytest.raises(OSError, match="No space left on device"):
            save(report, data / "reports" / "demo-1")
        assert sorted(p.name for p in (data / "reports" / "demo-1").iterdir()) == []
