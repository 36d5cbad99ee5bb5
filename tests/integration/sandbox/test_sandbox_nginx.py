"""NginxRouter against a real nginx: the split is what nginx serves, a config nginx -t rejects
changes nothing, a reload that does not take is an error, and a blue-green switch (and back) is
one test and one reload each, with no request failing under steady traffic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.providers.base import Instance, RouterState
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.nginx import NginxError, NginxRouter
from deployflow.sandbox.nginx import LocalNginx, nginx_binary
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND
from deployflow.sandbox.traffic import TrafficGenerator

pytestmark = pytest.mark.integration


states_at_start: list[RouterState] = []


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNginx]:
    with LocalNginx(tmp_path_factory.mktemp("nginx")) as server:
        states_at_start.append(server.router().state())
        yield server


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Instance, Instance]]:
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path_factory.mktemp("apps"))
    try:
        yield target.start("v1"), target.start("v2")
    finally:
        target.stop_all()


def test_a_fresh_nginx_sends_no_traffic_anywhere(nginx: LocalNginx) -> None:
    assert states_at_start == [RouterState(stable=None, canary=None, canary_weight=0)]


def test_a_quarter_of_the_requests_reach_the_canary(nginx, versions, request_versions) -> None:
    v1, v2 = versions
    router = nginx.router()
    router.set_split(v1, v2, 25)
    assert router.state() == RouterState(v1.address, v2.address, 25)
    counts = request_versions(nginx.frontend_url, 40)
    # One worker, smooth weighted round robin: the split is exact up to where the cycle started.
    assert abs(counts["v2"] - 10) <= 1, counts


@pytest.mark.parametrize(("weight", "only"), [(0, "v1"), (100, "v2")])
def test_zero_and_full_weight_send_everything_to_one_side(
    nginx, versions, request_versions, weight, only
) -> None:
    v1, v2 = versions
    nginx.router().set_split(v1, v2, weight)
    assert set(request_versions(nginx.frontend_url, 12)) == {only}


def test_a_config_nginx_rejects_leaves_the_file_and_the_traffic_as_they_were(
    nginx, versions, request_versions
) -> None:
    v1, v2 = versions
    router = nginx.router()
    router.set_split(v1, v2, 25)
    before = nginx.upstream_file.read_bytes()
    main = nginx.config_file.read_text()
    # The operator's own config is broken: deployflow must not reload into it.
    nginx.config_file.write_text(main + "no_such_directive on;\n")
    try:
        with pytest.raises(NginxError, match='unknown directive "no_such_directive"') as error:
            router.set_split(v1, v2, 50)
        assert "unchanged" in str(error.value)
    finally:
        nginx.config_file.write_text(main)
    assert nginx.upstream_file.read_bytes() == before
    assert router.state() == RouterState(v1.address, v2.address, 25)
    assert request_versions(nginx.frontend_url, 8)["v2"] == 2


def test_preflight_runs_nginx_t_on_the_configuration_as_it_is(nginx: LocalNginx) -> None:
    router = nginx.router()
    router.preflight()
    before = nginx.upstream_file.read_bytes()
    main = nginx.config_file.read_text()
    nginx.config_file.write_text(main + "no_such_directive on;\n")
    try:
        with pytest.raises(NginxError, match="before deployflow changed anything") as error:
            router.preflight()
        assert str(nginx.config_file) in str(error.value)
        assert 'unknown directive "no_such_directive"' in str(error.value)
    finally:
        nginx.config_file.write_text(main)
    assert nginx.upstream_file.read_bytes() == before


def test_a_failed_reload_puts_the_previous_file_back(nginx, versions) -> None:
    v1, v2 = versions
    before = nginx.upstream_file.read_bytes()
    router = NginxRouter(
        nginx.config_file,
        nginx.upstream_file,
        state_listen=nginx.state_listen,
        frontend_url=nginx.frontend_url,
        reload_command=["sh", "-c", "echo 'nginx: no pid file' >&2; exit 1"],
    )
    with pytest.raises(NginxError, match=r"reload .* failed.*no pid file"):
        router.set_split(v1, v2, 50)
    assert nginx.upstream_file.read_bytes() == before


def test_a_reload_that_does_not_take_is_an_error_naming_what_nginx_serves(nginx, versions) -> None:
    v1, v2 = versions
    served = nginx.router().state()
    router = NginxRouter(
        nginx.config_file,
        nginx.upstream_file,
        state_listen=nginx.state_listen,
        frontend_url=nginx.frontend_url,
        reload_command=["true"],  # "succeeds" without reloading anything
        reload_timeout=0.2,
        reload_settle=0.0,
    )
    with pytest.raises(NginxError, match=r"did not serve the new split.*it still serves"):
        router.set_split(v1, v2, 50)
    # The file says 50 (reload "succeeded"); the router reports what nginx serves.
    assert "canary_weight 50" not in nginx.upstream_file.read_text()
    assert router.state() == served
    assert served.canary_weight != 50


def test_an_unreachable_state_server_is_a_backend_error(tmp_path: Path) -> None:
    router = NginxRouter(
        tmp_path / "nginx.conf",
        tmp_path / "up.conf",
        state_listen=f"127.0.0.1:{free_port()}",
        frontend_url="http://127.0.0.1:1",
    )
    with pytest.raises(NginxError, match="unreachable"):
        router.state()


def test_a_blue_green_switch_is_one_reload_and_no_request_fails_under_steady_traffic(
    nginx: LocalNginx, versions, tmp_path: Path, request_versions
) -> None:
    blue, green = versions
    log = tmp_path / "commands.log"
    binary = nginx_binary()
    conf = str(nginx.config_file)

    def counted(what: str, *argv: str) -> list[str]:
        # The same nginx command, leaving a line in the log each time it runs.
        return ["sh", "-c", f'echo {what} >> "$0"; exec "$@"', str(log), binary, "-c", conf, *argv]

    router = NginxRouter(
        nginx.config_file,
        nginx.upstream_file,
        state_listen=nginx.state_listen,
        frontend_url=nginx.frontend_url,
        test_command=counted("test", "-t", "-q"),
        reload_command=counted("reload", "-s", "reload"),
    )
    router.set_split(blue, None, 0)
    log.unlink()
    # A new connection per request: nginx keeps its listening socket across a reload and lets
    # requests in flight finish, but a retiring worker closes idle keep-alive connections at once,
    # so a client reusing one at that instant must retry (bench/bench_bluegreen.py counts those).
    with TrafficGenerator(nginx.frontend_url, rps=100, workers=4, keep_alive=False) as traffic:
        wait_for(lambda: traffic.total >= 20, timeout=10, what="traffic through nginx")
        sent = traffic.total
        router.set_split(blue, green, 100)  # the switch: blue down and green in one file
        assert router.state() == RouterState(blue.address, green.address, 100)
        assert set(request_versions(nginx.frontend_url, 8)) == {"v2"}
        router.set_split(blue, None, 0)  # the switch back
        assert set(request_versions(nginx.frontend_url, 8)) == {"v1"}
        during = traffic.total - sent
    assert log.read_text().split() == ["test", "reload", "test", "reload"]
    assert during >= 20, "the switches must meet traffic"
    assert traffic.transport_errors == 0
    assert set(traffic.status_counts()) == {200}, traffic.status_counts()
