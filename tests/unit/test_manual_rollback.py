"""Which version a person's rollback returns to, and when it is refused."""

from __future__ import annotations

import pytest

from deployflow.manual_rollback import (
    ROLLBACK_STRATEGY,
    PastDeploy,
    choose_version,
    last_good,
    live_version,
    schema_allows,
)

pytestmark = pytest.mark.unit


def ok(version: str) -> PastDeploy:
    return PastDeploy(version, "succeeded")


def undone(bad: str, to: str, status: str = "rolled_back") -> PastDeploy:
    return PastDeploy(bad, status, ROLLBACK_STRATEGY, previous_version=to)


def choose(history: list[PastDeploy], live: str | None, requested: str | None = None):
    return choose_version(history, live, requested, service="shop", environment="prod")


def test_last_good_is_the_release_before_the_live_one() -> None:
    history = [ok("v3"), ok("v2"), ok("v1")]  # newest first
    assert choose(history, "v3").target == "v2"


def test_automatic_rollbacks_failures_and_aborts_are_skipped() -> None:
    history = [
        ok("v5"),
        PastDeploy("v4", "rolled_back"),
        PastDeploy("v3", "failed"),
        PastDeploy("v3b", "aborted"),
        ok("v2"),
    ]
    assert choose(history, "v5").target == "v2"


def test_a_version_a_person_rolled_back_is_skipped() -> None:
    # v2 succeeded, then someone rolled it back to v1, then v3 was released.
    history = [ok("v3"), undone("v2", "v1"), ok("v2"), ok("v1")]
    assert last_good(history, "v3") == "v1"


def test_a_version_released_again_after_its_rollback_counts_again() -> None:
    history = [ok("v3"), ok("v2"), PastDeploy("v2", "rolled_back"), ok("v1")]
    assert last_good(history, "v3") == "v2"


def test_the_live_version_is_never_the_target_even_when_released_twice() -> None:
    history = [ok("v2"), ok("v1"), ok("v2")]
    assert choose(history, "v2").target == "v1"


def test_live_version_follows_the_last_manual_rollback() -> None:
    assert live_version([undone("v2", "v1"), ok("v2"), ok("v1")]) == "v1"
    assert live_version([ok("v3"), undone("v2", "v1"), ok("v2")]) == "v3"
    # A manual rollback that could not move traffic left the bad version live.
    assert live_version([undone("v2", "v1", "failed"), ok("v2"), ok("v1")]) == "v2"
    assert live_version([PastDeploy("v2", "rolled_back"), ok("v1")]) == "v1"
    assert live_version([]) is None


def test_rolling_back_twice_goes_further_back() -> None:
    history = [undone("v3", "v2"), ok("v3"), ok("v2"), ok("v1")]
    assert choose(history, "v2").target == "v1"


def test_a_named_version_that_completed_a_release_is_taken() -> None:
    history = [ok("v3"), ok("v2"), ok("v1")]
    choice = choose(history, "v3", "v1")
    assert (choice.ok, choice.target, choice.live) == (True, "v1", "v3")


def test_refused_when_the_named_version_is_live() -> None:
    choice = choose([ok("v2"), ok("v1")], "v2", "v2")
    assert not choice.ok
    assert choice.refusal == "v2 is the live version of shop in prod: nothing to roll back"


def test_refused_when_the_named_version_never_completed_a_release() -> None:
    history = [ok("v3"), PastDeploy("v2", "rolled_back"), ok("v1")]
    for unknown in ("v9", "v2"):
        choice = choose(history, "v3", unknown)
        assert not choice.ok
        assert choice.refusal is not None
        assert choice.refusal.startswith(f"{unknown} never completed a release of shop in prod")
        assert "knows: v1" in choice.refusal


def test_refused_when_nothing_serves() -> None:
    choice = choose([ok("v1")], None)
    assert not choice.ok
    assert choice.refusal is not None
    assert "no live version" in choice.refusal


def test_refused_when_no_earlier_good_version_exists() -> None:
    for history in ([ok("v1")], [ok("v2"), PastDeploy("v1", "rolled_back")], []):
        choice = choose(history, history[0].version if history else "v1")
        assert not choice.ok
        assert choice.refusal is not None
        assert choice.refusal.startswith("no version completed")


def test_the_schema_refuses_a_version_that_cannot_run_with_what_was_applied_since() -> None:
    from deployflow.schema import RevisionClass, SchemaChangeRecord, SchemaRange

    assert schema_allows("v1", []) == "ok"  # releases that apply no migrations
    dropped = SchemaRange(
        "r1", "r2", (RevisionClass("r2", "breaks", "reversible", ("drops a column",)),), True
    )
    history = [SchemaChangeRecord(7, "v2", "v1", "r1", "r2", "applied", dropped)]
    assert schema_allows("v1", history) == "v1 cannot run with the schema at r2: r2 (applied by " \
        "v2): drops a column"  # fmt: skip
    assert schema_allows("v2", history) == "ok"


def test_a_kept_version_is_stopped_after_its_window_unless_it_serves_again() -> None:
    from datetime import UTC, datetime, timedelta

    from deployflow.manual_rollback import kept_action

    until = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    before, after = until - timedelta(seconds=1), until + timedelta(seconds=1)
    assert kept_action("v1", until, before, {"v2"}) == "keep"
    assert kept_action("v1", until, until, {"v2"}) == "stop"
    assert kept_action("v1", until, after, set()) == "stop"
    assert kept_action("v1", until, after, {"v1"}) == "live"
    assert kept_action("v1", until, before, {"v1", "v2"}) == "live"


def test_the_version_live_before_the_first_tracked_release_is_good() -> None:
    # The sandbox (or a service adopted by deployflow) had v1 live before any tracked deploy.
    history = [PastDeploy("v2", "succeeded", previous_version="v1")]
    assert choose(history, "v2").target == "v1"
    assert choose(history, "v2", "v1").target == "v1"
    # After a person rolled v3 back to v2, v4 went out over v2: back to v2, not v3.
    history = [
        PastDeploy("v4", "succeeded", previous_version="v2"),
        undone("v3", "v2"),
        PastDeploy("v3", "succeeded", previous_version="v2"),
    ]
    assert last_good(history, "v4") == "v2"
    assert last_good(history[1:], "v2") is None  # v3 rolled away from, v2 live
