"""Whether a held Prefect slot belongs to a live deploy, as the tracking database sees it: a slot
left by a deploy that died is waited out (its lease lapses within 60 s), a live one refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from deployflow.tracking.ledger import Ledger, UnfinishedDeploy
from tasks.concurrency import live_deploy_in

pytestmark = pytest.mark.unit


class Rows:
    """Rows whose heartbeat ages count from the moment they are read (parameters are built at
    collection, minutes before a test runs in the whole suite)."""

    def __init__(self, *rows: tuple[float | None, bool], fail: bool = False) -> None:
        self.rows, self.fail = rows, fail

    def unfinished(self, service: str, environment: str, *, except_flow_run: Any) -> list[Any]:
        if self.fail:
            raise OSError("database is locked")
        return [row(age, ended=ended) for age, ended in self.rows]


def row(heartbeat_age_s: float | None, *, ended: bool = False) -> UnfinishedDeploy:
    beat = (
        None if heartbeat_age_s is None else datetime.now(UTC) - timedelta(seconds=heartbeat_age_s)
    )
    return UnfinishedDeploy(1, "v2", "run", False, ended=ended, heartbeat_at=beat)


@pytest.mark.parametrize(
    ("ledger", "alive"),
    [
        (None, True),  # no database: cannot tell, refuse
        (Rows(fail=True), True),  # unreadable: cannot tell, refuse
        (Rows(), False),  # nobody running: the holder died
        (Rows((1.0, False)), True),  # a fresh heartbeat
        (Rows((3600.0, False)), False),  # a lapsed lease: killed
        (Rows((None, False)), False),  # died before its first heartbeat
        (Rows((1.0, True)), False),  # ended, traffic to settle: not running
    ],
)
def test_a_slot_holder_is_alive_only_when_the_database_sees_it_running(ledger, alive, monkeypatch):
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "30")
    assert live_deploy_in(cast(Ledger | None, ledger), "shop", "prod", "own") is alive
