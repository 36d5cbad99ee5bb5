"""Which version sat at which router address and in which slot, across promotions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deployflow.fakes.backends import InMemoryRouter, InMemoryTarget
from deployflow.providers.base import Instance, RouterState
from deployflow.providers.slots import (
    RecordingRouter,
    SlotAssignment,
    SlotEntry,
    SlotHistory,
    SlotSpan,
    default_history_path,
)

pytestmark = pytest.mark.unit

V1 = Instance("v1", "127.0.0.1", 9001)
V2 = Instance("v2", "127.0.0.1", 9002)
V3 = Instance("v3", "127.0.0.1", 9003)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry(at: float, *slots: tuple[str, Instance]) -> SlotEntry:
    return SlotEntry(at, tuple(SlotAssignment(s, i.address, i.version) for s, i in slots))


def test_a_promotion_re_points_the_stable_slot_and_each_address_keeps_its_version() -> None:
    history = SlotHistory(None)
    history.record(entry(100, ("stable", V1)))
    history.record(entry(200, ("stable", V1), ("canary", V2)))
    history.record(entry(300, ("stable", V2)))  # promoted: v1 gets no more traffic
    assert history.version_of(V1.address, 150) == "v1"
    assert history.version_of(V2.address, 250) == "v2"
    # A request to v1 still in flight at the promotion is logged after it: still v1's.
    assert history.version_of(V1.address, 301) == "v1"
    assert history.version_of(V2.address, 301) == "v2"
    # By slot: the stable slot was v1's before the promotion and v2's after.
    assert history.slots_of("v2", 150, 400) == [
        SlotSpan("canary", 200, 300),
        SlotSpan("stable", 300, 400),
    ]
    assert history.slots_of("v1", 150, 400) == [SlotSpan("stable", 150, 300)]


def test_before_the_first_entry_the_first_entry_holds_and_unknown_addresses_are_none() -> None:
    history = SlotHistory(None)
    history.record(entry(500, ("stable", V1)))
    # The service ran before deployflow first saw it: the baseline before that is v1's.
    assert history.version_of(V1.address, 100) == "v1"
    assert history.slots_of("v1", 100, 600) == [SlotSpan("stable", 100, 600)]
    assert history.version_of(V2.address, 600) is None
    assert history.slots_of("v2", 100, 600) == []


def test_an_address_reused_by_a_later_version_is_that_version_from_then_on() -> None:
    history = SlotHistory(None)
    reused = Instance("v4", V2.host, V2.port)
    history.record(entry(100, ("stable", V1), ("canary", V2)))
    history.record(entry(200, ("stable", V1)))  # v2 rolled back and stopped
    history.record(entry(300, ("stable", V1), ("canary", reused)))
    assert history.version_of(V2.address, 250) == "v2"
    assert history.version_of(V2.address, 301) == "v4"


def test_the_history_file_is_shared_by_runs_and_survives_them(tmp_path: Path) -> None:
    path = tmp_path / "slots" / "shop.jsonl"
    first = SlotHistory(path)
    first.record(entry(100, ("stable", V1), ("canary", V2)))
    second = SlotHistory(path)  # another run, another process
    assert second.version_of(V2.address, 150) == "v2"
    second.record(entry(200, ("stable", V2)))
    assert first.slots_of("v2", 0, 300) == [
        SlotSpan("canary", 0, 200),
        SlotSpan("stable", 200, 300),
    ]
    lines = path.read_text().splitlines()
    assert [json.loads(line)["at"] for line in lines] == [100, 200]


def test_a_history_that_cannot_be_written_is_kept_for_the_run(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    history = SlotHistory(blocked / "shop.jsonl")  # its folder is a file
    history.record(entry(100, ("stable", V1)))
    assert history.version_of(V1.address, 150) == "v1"


def test_lines_that_are_not_entries_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "shop.jsonl"
    path.write_text("not json\n" + entry(100, ("stable", V1)).to_json() + "\n{}\n")
    assert SlotHistory(path).version_of(V1.address, 150) == "v1"


def test_the_recording_router_writes_each_change_stamped_when_it_began() -> None:
    clock = Clock(1000.0)
    history = SlotHistory(None)
    target = InMemoryTarget()
    router = RecordingRouter(InMemoryRouter(), history, target, clock=clock)
    router.set_split(V1, None, 0)
    clock.now = 1010.0
    router.set_split(V1, V2, 5)
    clock.now = 1020.0
    router.set_split(V1, V2, 0)  # weight 0: the canary slot is out
    clock.now = 1030.0
    router.promote(V2)
    assert [(e.at, [(s.slot, s.version) for s in e.slots]) for e in history.entries()] == [
        (1000.0, [("stable", "v1")]),
        (1010.0, [("stable", "v1"), ("canary", "v2")]),
        (1020.0, [("stable", "v1")]),
        (1030.0, [("stable", "v2")]),
    ]
    assert router.state() == RouterState(V2.address, None, 0)
    assert len(history.entries()) == 4  # a state that agrees is not written again


def test_a_state_the_history_lacks_is_recorded_with_the_versions_the_target_runs() -> None:
    # The first deploy of a service that already runs: v1 was put behind the router by hand.
    clock = Clock(500.0)
    target = InMemoryTarget()
    live = target.start("v1")
    inner = InMemoryRouter()
    inner.set_split(live, None, 0)
    history = SlotHistory(None)
    RecordingRouter(inner, history, target, clock=clock).state()
    (observed,) = history.entries()
    assert (observed.at, observed.how) == (500.0, "observed")
    assert observed.slots == (SlotAssignment("stable", live.address, "v1"),)
    assert history.version_of(live.address, 10.0) == "v1"  # the baseline before it, too


def test_a_failed_change_records_nothing() -> None:
    class Refusing(InMemoryRouter):
        def set_split(self, stable: Instance, canary: Instance | None, weight: int) -> None:
            raise RuntimeError("refused")

    history = SlotHistory(None)
    router = RecordingRouter(Refusing(), history)
    with pytest.raises(RuntimeError):
        router.set_split(V1, V2, 5)
    assert history.entries() == []


def test_haproxy_server_names_are_the_slot_names() -> None:
    class Named(InMemoryRouter):
        stable_server = "blue"
        canary_server = "green"

    history = SlotHistory(None)
    RecordingRouter(Named(), history).set_split(V1, V3, 50)
    assert [s.slot for s in history.entries()[0].slots] == ["blue", "green"]


def test_the_default_history_is_one_file_per_service_under_the_data_dir(tmp_path: Path) -> None:
    assert default_history_path(tmp_path, "shop") == tmp_path / "slots" / "shop.jsonl"
    assert default_history_path(tmp_path, "a/b") == tmp_path / "slots" / "a_b.jsonl"


def test_a_run_and_the_live_checks_record_router_changes_only_for_metrics_that_need_them(
    tmp_path: Path,
) -> None:
    from deployflow.live import build_live_backends
    from deployflow.providers.base import BuildContext
    from deployflow.spec import parse_spec
    from tests.samples import spec_data

    access_log = {"kind": "access-log", "path": str(tmp_path / "a.log"), "format": "haproxy"}
    ctx = BuildContext(env={}, service="shop")
    slots = parse_spec(spec_data(metrics={**access_log, "slot_history": str(tmp_path / "s")}))
    router = build_live_backends(slots, ctx).router
    assert isinstance(router, RecordingRouter)
    assert router.history.path == tmp_path / "s"
    assert not isinstance(build_live_backends(parse_spec(spec_data()), ctx).router, RecordingRouter)
