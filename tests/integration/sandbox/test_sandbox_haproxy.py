"""HAProxyRouter against a real HAProxy: weights change the actual request split, no reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployflow.polling import wait_for
from deployflow.providers.base import Instance, Router, RouterState
from deployflow.providers.haproxy import HAProxyRouter, RouterError
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def haproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHAProxy]:
    with LocalHAProxy(tmp_path_factory.mktemp("haproxy")) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path_factory.mktemp("apps"))
    try:
        yield target.start("v1"), target.start("v2")
    finally:
        target.stop_all()


@pytest.fixture
def router(haproxy: LocalHAProxy) -> HAProxyRouter:
    return haproxy.router()


def test_no_server_enabled_before_the_first_split(haproxy, router):
    # A fresh HAProxy: both slots are config placeholders in maintenance.
    fresh = LocalHAProxy(haproxy.state_dir.parent / "fresh-haproxy").start()
    try:
        assert fresh.router().state() == RouterState(stable=None, canary=None, canary_weight=0)
    finally:
        fresh.stop()


def test_quarter_of_the_requests_reach_the_canary(haproxy, router, versions, request_versions):
    v1, v2 = versions
    assert isinstance(router, Router)
    router.set_split(v1, v2, 25)
    assert router.state() == RouterState(stable=v1.address, canary=v2.address, canary_weight=25)
    counts = request_versions(haproxy.frontend_url, 400)
    assert counts["v1"] + counts["v2"] == 400
    canary_percent = 100 * counts["v2"] / 400
    assert abs(canary_percent - 25) <= 5, counts


@pytest.mark.parametrize(("weight", "only"), [(0, "v1"), (100, "v2")])
def test_zero_and_full_weight_send_everything_to_one_side(
    haproxy, router, versions, request_versions, weight, only
):
    v1, v2 = versions
    router.set_split(v1, v2, 50)  # start from a real split so the change is what we observe
    router.set_split(v1, v2, weight)
    counts = request_versions(haproxy.frontend_url, 100)
    assert counts == {only: 100}
    state = router.state()
    assert state.canary_weight == weight
    assert state.canary == (None if weight == 0 else v2.address)


def test_promote_makes_the_canary_the_only_stable(haproxy, router, versions, request_versions):
    v1, v2 = versions
    router.set_split(v1, v2, 50)
    router.promote(v2)
    assert router.state() == RouterState(stable=v2.address, canary=None, canary_weight=0)
    assert request_versions(haproxy.frontend_url, 100) == {"v2": 100}
    router.set_split(v2, None, 0)  # a later split after promotion keeps working
    assert request_versions(haproxy.frontend_url, 20) == {"v2": 20}


def test_unknown_server_name_is_a_router_error(haproxy, versions):
    v1, v2 = versions
    router = HAProxyRouter(
        haproxy.admin_socket, canary_server="nope", frontend_url=haproxy.frontend_url
    )
    with pytest.raises(RouterError, match="no server 'nope'"):
        router.set_split(v1, v2, 10)


def test_haproxy_error_answer_names_command_and_answer(haproxy, versions):
    with pytest.raises(RouterError, match=r"'show servers state nope'.*Can't find backend"):
        HAProxyRouter(
            haproxy.admin_socket, backend="nope", frontend_url=haproxy.frontend_url
        ).state()
    v1, _ = versions
    bad_address = Instance("v9", "999.0.0.1", 8080)
    with pytest.raises(RouterError, match=r"refused 'set server app/canary addr 999\.0\.0\.1"):
        haproxy.router().set_split(v1, bad_address, 10)


def test_unreachable_socket_is_a_router_error(tmp_path: Path):
    with pytest.raises(RouterError, match="unreachable"):
        HAProxyRouter(tmp_path / "no.sock", frontend_url="http://127.0.0.1:1").state()


def test_a_canary_that_stops_answering_is_taken_out_by_the_health_check(
    haproxy, router, tmp_path, request_versions
):
    """Its slot reads as down (which fails the stage at once), and users reach only stable."""
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path)
    try:
        stable, canary = target.start("v1"), target.start("v5")
        router.set_split(stable, canary, 50)
        assert router.state().canary == canary.address  # a fresh slot starts in service
        target.stop("v5")
        wait_for(
            lambda: router.state().canary is None,
            timeout=10,
            interval=0.1,
            what="HAProxy to mark the dead canary down",
        )
        assert request_versions(haproxy.frontend_url, 50) == {"v1": 50}
    finally:
        router.set_split(stable, None, 0)
        target.stop_all()


def test_the_router_takes_a_canary_failing_every_request_out_by_itself(
    haproxy, router, versions, tmp_path
):
    # The data-plane guard: a version answering 500 to everything (its health endpoint fine)
    # is out of rotation after five failed answers in a row, without waiting for the judge,
    # and stays out (its health endpoint answers, but coming back takes 20 good checks); the
    # next canary put in that slot gets traffic at once.
    v1, _ = versions
    faulty = LocalProcessTarget(
        DEMO_APP_COMMAND,
        state_dir=tmp_path,
        env={"DEPLOYFLOW_DEMO_FAULTS": '{"v5": {"error_rate": 1.0}}'},
    )
    try:
        v5 = faulty.start("v5")
        router.set_split(v1, v5, 50)
        bad = 0
        with httpx.Client(base_url=haproxy.frontend_url, timeout=5.0) as client:
            for _ in range(200):
                if client.get("/api/items").status_code >= 500:
                    bad += 1
        # Five in a row take it out; HAProxy acts on the mark-down a request or two later.
        assert 5 <= bad <= 10, bad
        state = router.state()
        assert state.canary is None, state  # what the judge sees at its next look
        assert state.stable == v1.address
    finally:
        faulty.stop_all()
    _, v2 = versions
    router.set_split(v1, v2, 50)  # a healthy canary in the same slot
    wait_for(
        lambda: router.state().canary == v2.address or None,
        timeout=5,
        interval=0.1,
        what="the next canary in rotation",
    )


@pytest.mark.parametrize(("health_path", "status"), [("/api/items", 200), ("/no-such-path", 503)])
def test_health_checks_ask_the_path_given(tmp_path: Path, versions, health_path, status):
    # A service without /healthz (Datasette, say) is checked on a path it has; checked on one
    # it lacks, its server goes down and users get HAProxy's 503.
    v1, _ = versions
    with LocalHAProxy(tmp_path / "haproxy", health_path=health_path) as proxy:
        proxy.router().set_split(v1, None, 0)

        def answered() -> int | None:
            found = httpx.get(f"{proxy.frontend_url}/api/items", timeout=5).status_code
            return found if found == status else None

        wait_for(answered, timeout=10, interval=0.2, what=f"a {status} through the frontend")
        assert f"option httpchk GET {health_path}\n" in proxy.config_file.read_text()
