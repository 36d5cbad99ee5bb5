"""A tracking database that stops answering mid-deploy: how long before the deploy rolls back,
what counts as not answering, the fence's rule (restoring the stable version is allowed on the
local lease, moving traffic towards the new version is not), and the outcome's bounded record."""

from __future__ import annotations

import errno
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from deployflow.analysis import Verdict
from deployflow.fakes.backends import InMemoryRouter
from deployflow.fencing import FencedRouter, FencedTarget, LeaseLost, LeaseUnconfirmed, lease_lost
from deployflow.providers.base import Instance
from deployflow.release import ReleaseOutcome, RollbackRecord, Trigger
from deployflow.rollout import StageResult
from deployflow.tracking.answers import (
    Answers,
    keep_trying,
    silence_grace,
    tracking_silence_reason,
    unanswered,
)
from deployflow.tracking.lease import Lease
from deployflow.tracking.ledger import Ledger

REFUSED = OperationalError(
    "SELECT 1", {}, Exception('connection failed: connection to server at "127.0.0.1", '
                              "port 5432 failed: Connection refused")
)  # fmt: skip
V1, V2 = Instance("v1", "127.0.0.1", 1), Instance("v2", "127.0.0.1", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_deploy_stops_after_one_renewal_period_of_silence_not_at_one_failed_query() -> None:
    clock = Clock()
    answers = Answers(clock)
    grace = silence_grace(30.0)
    assert grace == 5.0
    assert answers.stopped(grace) is None
    answers.failed(REFUSED)
    clock.now += 4.9
    assert answers.stopped(grace) is None  # a blip is not a reason to roll back
    answers.failed(REFUSED)
    clock.now += 0.1
    why = answers.stopped(grace)
    assert why is not None
    assert why.startswith("the tracking database stopped answering: connection failed: ")
    assert "Connection refused" in why
    assert "(for 5 s)" in why
    answers.answered()
    assert answers.silent_for() == 0.0
    assert answers.stopped(grace) is None
    assert "puts traffic back on the stable version" in tracking_silence_reason(why)


@pytest.mark.parametrize(
    ("exc", "silent"),
    [
        (REFUSED, True),
        (OperationalError("INSERT", {}, Exception("database or disk is full")), True),
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (IntegrityError("INSERT", {}, Exception("duplicate key")), False),  # an answer
        (KeyError("deployment 7"), False),
    ],
)
def test_what_counts_as_the_database_not_answering(exc: BaseException, silent: bool) -> None:
    assert unanswered(exc) is silent


def test_the_outcome_is_tried_again_until_the_database_takes_it_within_the_bound() -> None:
    clock = Clock()
    tries: list[float] = []

    def record() -> None:
        tries.append(clock.now)
        if len(tries) < 4:
            raise REFUSED

    assert keep_trying(record, 30.0, interval=2.0, clock=clock, sleep=clock.sleep) is None
    assert tries == [100.0, 102.0, 104.0, 106.0]


def test_the_outcome_record_gives_up_at_its_bound_and_a_bug_is_raised_at_once() -> None:
    clock = Clock()
    tries: list[float] = []

    def refused() -> None:
        tries.append(clock.now)
        raise REFUSED

    assert keep_trying(refused, 5.0, interval=2.0, clock=clock, sleep=clock.sleep) is REFUSED
    assert tries == [100.0, 102.0, 104.0]  # a fourth try would end past the bound

    def bug() -> None:
        raise KeyError("deployment 7")

    with pytest.raises(KeyError):
        keep_trying(bug, 30.0, clock=clock, sleep=clock.sleep)


def fenced(tmp_path) -> tuple[Ledger, Lease, FencedRouter, FencedTarget, InMemoryRouter]:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    row = ledger.start(ReleaseOutcome(service="shop", environment="prod", version="v2"))
    lease = Lease(ledger, row, seconds=30.0)
    inner = InMemoryRouter()
    inner.set_split(V1, V2, 50)
    router = FencedRouter(inner, lease.check, lease.check_restore, V1)
    target = FencedTarget(_Target(), lease.check, lease.check_restore)
    return ledger, lease, router, target, inner


class _Target:
    def __init__(self) -> None:
        self.stopped: list[str] = []
        self.started: list[str] = []

    def start(self, version: str) -> Instance:
        self.started.append(version)
        return V2

    def stop(self, version: str) -> None:
        self.stopped.append(version)


def database_down(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every query of ``ledger`` fails as a stopped PostgreSQL makes it fail."""

    def refused(*args: object, **kwargs: object) -> None:
        with ledger._noting_answers():
            raise REFUSED

    for name in ("holds_lease", "renew", "traffic_restored", "record_outcome"):
        monkeypatch.setattr(ledger, name, refused)


def test_with_the_database_down_traffic_goes_back_on_stable_but_never_towards_the_canary(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, _lease, router, target, inner = fenced(tmp_path)
    database_down(ledger, monkeypatch)
    with pytest.raises(LeaseUnconfirmed, match="did not answer the lease check"):
        router.set_split(V1, V2, 100)
    with pytest.raises(LeaseUnconfirmed):
        router.promote(V2)
    with pytest.raises(LeaseUnconfirmed):
        target.start("v3")
    assert inner.state().canary_weight == 50  # nothing moved towards v2
    assert not lease_lost(router)  # a database that does not answer is not a lost lease

    router.set_split(V1, None, 0)  # the restore is allowed on the local lease
    target.stop("v2")
    assert (inner.state().stable, inner.state().canary_weight) == (V1.address, 0)
    assert target.inner.stopped == ["v2"]  # type: ignore[attr-defined]


def test_with_the_database_down_past_the_lease_nothing_is_touched_at_all(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a whole lease passed without renewal the next deploy may have taken over (the
    database may be back by then): even the restore is refused."""
    ledger, lease, router, target, inner = fenced(tmp_path)
    database_down(ledger, monkeypatch)
    lease._renewed_at -= 31.0
    with pytest.raises(LeaseLost, match="no renewal for 31 s"):
        router.set_split(V1, None, 0)
    with pytest.raises(LeaseLost):
        target.stop("v2")
    assert lease_lost(router)
    assert inner.state().canary_weight == 50


def test_a_restore_to_another_version_than_the_deploys_stable_needs_the_database(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, _lease, router, _target, _inner = fenced(tmp_path)
    database_down(ledger, monkeypatch)
    with pytest.raises(LeaseUnconfirmed):
        router.set_split(Instance("v0", "127.0.0.1", 9), None, 0)


def stage(index: int, verdict: Verdict) -> StageResult:
    now = datetime.now(UTC)
    return StageResult(index=index, weight=50, verdict=verdict, measurements=[], reason=None,
                       started_at=now,
                       finished_at=now)  # fmt: skip


def test_a_late_record_keeps_the_stages_the_database_missed_and_clears_the_restored_weight(
    tmp_path,
) -> None:
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    outcome = ReleaseOutcome(service="shop", environment="prod", version="v2")
    outcome.deployment_id = ledger.start(outcome)
    ledger.traffic_moving(outcome.deployment_id, stage=1, weight=50)
    ledger.stage_observed(outcome.deployment_id, stage(0, Verdict.PROMOTE))
    outcome.stages = [stage(0, Verdict.PROMOTE), stage(1, Verdict.ROLLBACK)]  # 1 never recorded
    reason = tracking_silence_reason("the tracking database stopped answering: x (for 5 s)")
    trigger = Trigger(1, 50, "tracking_database", None, None, reason)
    outcome.rollback = RollbackRecord(trigger)
    outcome.status, outcome.message = "rolled_back", f"rolled back to v1: {trigger.headline}"
    ledger.record_outcome(outcome, outcome.message)

    data = ledger.deployment(outcome.deployment_id)
    assert [(s["index"], s["verdict"]) for s in data["stages"]] == [(0, "promote"),
                                                                   (1, "rollback")]  # fmt: skip
    assert data["status"] == "rolled_back"
    assert data["canary_weight"] == 0  # the next deploy has nothing to settle
    assert data["summary"].startswith("rolled back to v1: the tracking database stopped answering")
