from __future__ import annotations

import pytest

from deployflow.fakes.backends import InMemoryRouter, InMemoryTarget
from deployflow.providers.base import BackendError, RouterState
from deployflow.reconcile import (
    LiveVersionLost,
    RecordedRollout,
    closing_of_interrupted,
    decide_unfinished,
    reconcile,
    restore_recorded_live,
)

pytestmark = pytest.mark.unit


def setup(weight: int) -> tuple[InMemoryRouter, InMemoryTarget]:
    router, target = InMemoryRouter(), InMemoryTarget()
    v1, v2 = target.start("v1"), target.start("v2")
    router.set_split(v1, v2, weight)
    return router, target


def test_canary_with_traffic_is_rolled_back_and_stopped() -> None:
    router, target = setup(25)
    result = reconcile(router, target, "v2")
    assert result.restored_traffic
    assert result.stopped == ("v2",)
    assert router.state().canary is None
    assert router.state().canary_weight == 0
    assert router.state().stable == target.running["v1"].address
    assert set(target.running) == {"v1"}


def test_started_canary_without_traffic_is_stopped() -> None:
    router, target = setup(0)
    result = reconcile(router, target, "v2")
    assert result.stopped == ("v2",)
    assert set(target.running) == {"v1"}


def test_promoted_version_keeps_serving() -> None:
    router, target = setup(50)
    router.promote(target.running["v2"])
    result = reconcile(router, target, "v2")
    assert not result.restored_traffic
    assert result.stopped == ()
    assert "verification never ran" in result.message
    assert router.state().stable == target.running["v2"].address


def test_only_serving_version_is_never_stopped() -> None:
    router, target = InMemoryRouter(), InMemoryTarget()
    router.canary, router.canary_weight = target.start("v2").address, 100
    result = reconcile(router, target, "v2")
    assert result.stopped == ()
    assert "v2" in target.running


@pytest.mark.parametrize(
    ("dry_run", "alive", "action"),
    [
        (False, True, "block"),
        (False, False, "reconcile"),
        (True, True, "ignore"),
        (True, False, "close"),
    ],
)
def test_what_a_new_run_does_about_an_unfinished_deploy(
    dry_run: bool, alive: bool, action: str
) -> None:
    assert decide_unfinished(dry_run=dry_run, alive=alive) == action


def lost_router(*running: str) -> tuple[InMemoryRouter, InMemoryTarget]:
    """A router restarted from its configuration (both slots point nowhere) beside a target
    running ``running``."""
    router, target = InMemoryRouter(), InMemoryTarget()
    for version in running:
        target.start(version)
    return router, target


def test_a_router_that_lost_its_stable_gets_the_recorded_live_version_back() -> None:
    router, target = lost_router("v1")
    result = restore_recorded_live(router, target, "v1")
    assert result is not None
    assert not result.started
    assert result.instance == target.running["v1"]
    assert router.state() == RouterState(target.running["v1"].address, None, 0)
    assert "tracking database says v1 is live" in result.message


def test_a_recorded_live_version_that_no_longer_runs_is_started_first() -> None:
    router, target = lost_router()
    result = restore_recorded_live(router, target, "v1")
    assert result is not None
    assert result.started
    assert set(target.running) == {"v1"}
    assert router.state().stable == target.running["v1"].address
    assert "started it" in result.message


def test_a_live_version_that_cannot_come_back_refuses_with_what_to_do() -> None:
    router, target = lost_router()
    target.fail_start.add("v1")
    with pytest.raises(LiveVersionLost, match="Start v1 and point the router's stable slot"):
        restore_recorded_live(router, target, "v1")
    assert router.state() == RouterState(None, None, 0)
    router, target = lost_router("v1")

    def refuse(*args: object) -> None:
        raise BackendError("HAProxy refused 'set server app/stable addr'")

    router.set_split = refuse  # type: ignore[method-assign]
    with pytest.raises(LiveVersionLost, match="Check the router"):
        restore_recorded_live(router, target, "v1")


def test_nothing_to_restore_for_a_first_release_or_a_serving_router() -> None:
    router, target = lost_router("v9")
    assert restore_recorded_live(router, target, None) is None  # the database never saw one
    assert router.changes == []
    router, target = setup(0)
    assert restore_recorded_live(router, target, "v1") is None
    assert restore_recorded_live(router, target, "v0") is None  # another serves: not ours to undo


def test_a_dry_run_restores_nothing_and_says_what_a_deploy_would_do() -> None:
    router, target = lost_router("v1")
    result = restore_recorded_live(router, target, "v1", dry_run=True)
    assert result is not None
    assert result.instance == target.running["v1"]
    assert router.changes == []
    assert "a real deploy puts it back" in result.message


PASSED_ROLLOUT = RecordedRollout(((5, "promote"), (25, "promote"), (100, "promote")), 100)


def test_a_promoted_deploy_that_could_not_record_it_is_closed_as_succeeded() -> None:
    router, target = setup(25)
    router.promote(target.running["v2"])
    result = reconcile(router, target, "v2")
    assert result.promoted
    status, summary = closing_of_interrupted("v2", result, PASSED_ROLLOUT)
    assert status == "succeeded"
    assert summary.startswith("v2 passed every recorded stage (5%, 25%, 100%) and was promoted")
    assert "Recorded as succeeded by the reconciler of the next deploy" in summary
    assert "the deploy could not record its outcome" in summary


@pytest.mark.parametrize(
    "rollout",
    [
        None,  # not read
        RecordedRollout((), 100),  # no stage recorded: nothing judged it
        RecordedRollout(((5, "promote"), (100, "rollback")), 100),  # one did not pass
        RecordedRollout(((5, "promote"), (100, "pause")), 100),
        RecordedRollout(((5, "promote"), (25, "promote")), 25),  # all the traffic not written
    ],
)
def test_incomplete_evidence_keeps_the_interrupted_failure(rollout: RecordedRollout | None) -> None:
    router, target = setup(25)
    router.promote(target.running["v2"])
    result = reconcile(router, target, "v2")
    status, summary = closing_of_interrupted("v2", result, rollout)
    assert status == "failed"
    assert summary == (
        "interrupted; v2 had been promoted before the interruption and keeps serving; its "
        "post-deploy verification never ran"
    )


def test_a_router_not_serving_the_version_alone_is_no_evidence_of_success() -> None:
    router, target = setup(25)  # v2 is the canary at 25%: not promoted
    result = reconcile(router, target, "v2")
    assert not result.promoted
    assert closing_of_interrupted("v2", result, PASSED_ROLLOUT)[0] == "failed"
    # Stable is v2 but another canary still takes a share: not all the traffic.
    router, target = setup(0)
    router.promote(target.running["v2"])
    router.set_split(target.running["v2"], target.start("v3"), 10)
    result = reconcile(router, target, "v2")
    assert not result.promoted
    assert closing_of_interrupted("v2", result, PASSED_ROLLOUT)[0] == "failed"


@pytest.mark.parametrize(
    ("status", "dry_run", "name", "label"),
    [
        ("succeeded", False, "Completed", "succeeded"),
        ("succeeded", True, "Completed", "dry-run"),
        ("rolled_back", False, "Failed", "rolled-back"),
        ("failed", False, "Failed", "failed"),
        ("aborted", False, "Failed", "aborted"),
    ],
)
def test_a_run_prefect_never_saw_end_gets_the_state_its_recorded_outcome_calls_for(
    status: str, dry_run: bool, name: str, label: str
) -> None:
    from tasks.reconcile import state_afterwards

    got = state_afterwards(status, dry_run, "x" * 3000, by="the next deploy of shop to prod")
    assert got[:2] == (name, label)
    assert got[2].startswith(f"{status} (set afterwards by the next deploy of shop to prod, ")
    assert len(got[2]) == 2000  # a state message is kept short
