"""The demo app's flag `new-checkout`: OpenFeature with the flagd provider reading the file that
deployflow's flagd-file backend writes, in-process; a fault in the new checkout path alone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.flags.flagd_file import FlagdFileProvider
from deployflow.polling import wait_for
from deployflow.sandbox.demo_app import (
    NEW_CHECKOUT_FLAG,
    DemoApp,
    Fault,
    FlagEvaluator,
    openfeature_flags,
    parse_faults,
)

pytestmark = pytest.mark.integration
USERS = [f"user-{i}" for i in range(400)]


@pytest.fixture
def flags(tmp_path: Path) -> Iterator[tuple[FlagdFileProvider, FlagEvaluator]]:
    from openfeature import api

    provider = FlagdFileProvider(tmp_path / "flags.json")
    provider.set_rollout(NEW_CHECKOUT_FLAG, 0)
    yield provider, openfeature_flags(str(provider.path), poll_ms=50)
    api.shutdown()


def test_fractional_rollout_and_kill_switch_reach_the_app_without_a_restart(flags) -> None:
    provider, evaluate = flags
    assert not any(evaluate(NEW_CHECKOUT_FLAG, u) for u in USERS)
    provider.set_rollout(NEW_CHECKOUT_FLAG, 25)
    wait_for(
        lambda: any(evaluate(NEW_CHECKOUT_FLAG, u) for u in USERS),
        timeout=10,
        what="the flag file change to reach the app",
    )
    # Counted again once the change has arrived: the pass that saw it may have begun before.
    on = sum(evaluate(NEW_CHECKOUT_FLAG, u) for u in USERS)
    assert 40 <= on <= 160, on  # about a quarter of 400 users, bucketed by targeting key
    same = {u for u in USERS if evaluate(NEW_CHECKOUT_FLAG, u)}
    provider.set_rollout(NEW_CHECKOUT_FLAG, 50)
    wait_for(
        lambda: sum(evaluate(NEW_CHECKOUT_FLAG, u) for u in USERS) > on,
        timeout=10,
        what="the 50% step",
    )
    assert same <= {u for u in USERS if evaluate(NEW_CHECKOUT_FLAG, u)}  # nobody flips back
    provider.set_rollout(NEW_CHECKOUT_FLAG, 0)  # the kill switch
    wait_for(
        lambda: not any(evaluate(NEW_CHECKOUT_FLAG, u) for u in USERS),
        timeout=10,
        what="the kill switch",
    )


def test_a_fault_in_the_new_checkout_path_fails_only_users_on_it(flags) -> None:
    provider, evaluate = flags
    [fault] = parse_faults('{"v2": {"new_checkout_error_rate": 1.0}}').values()
    app = DemoApp("v2", fault, rng=random.Random(3), base_latency=0.0, flags=evaluate)
    assert app.handle_app_request("/api/checkout", "user-1") == (
        200,
        {"version": "v2", "path": "/api/checkout", "checkout": "old"},
    )
    provider.set_rollout(NEW_CHECKOUT_FLAG, 100)
    wait_for(lambda: app.new_checkout("user-1"), timeout=10, what="the flag to turn on")
    assert app.handle_app_request("/api/checkout", "user-1")[0] == 500
    assert app.handle_app_request("/api/items", "user-1")[0] == 200  # other paths unaffected
    app_without_flags = DemoApp("v2", fault, base_latency=0.0)
    assert app_without_flags.handle_app_request("/api/checkout")[0] == 200
    assert Fault().new_checkout_error_rate == 0.0
