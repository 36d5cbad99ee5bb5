from __future__ import annotations

import pytest

from deployflow.fakes.backends import InMemoryRouter, InMemoryTarget
from deployflow.reconcile import decide_unfinished, reconcile

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
