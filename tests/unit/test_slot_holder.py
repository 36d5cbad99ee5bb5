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
    def __init__(self, *rows: UnfinishedDeploy, fail: bool = False) -> None:
        self.rows, self.fail = rows, fail

    def unfinished(self, service: str, environment: str, *, except_flow_run: Any) -> list[Any]:
        if self.fail:
            raise OSError("database is locked")
        return list(self.rows)


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
        (Rows(row(1.0)), True),  # a fresh heartbeat
        (Rows(row(3600.0)), False),  # a lapsed lease: killed
        (Rows(row(None)), False),  # died before its first heartbeat
        (Rows(row(1.0, ended=True)), False),  # ended, traffic to settle: not running
    ],
)
def test_a_slot_holder_is_alive_only_when_the_database_sees_it_running(ledger, alive, monkeypatch):
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "30")
    assert live_deploy_in(cast(Ledger | None, ledger), "shop", "prod", "own") is alive
