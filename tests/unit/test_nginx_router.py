"""The nginx router's pure parts: how percentages become upstream servers, what the owned file
holds, and what its spec section accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.providers import registry
from deployflow.providers.base import BuildContext, Instance, RouterState
from deployflow.providers.nginx import NginxRouter, plan_servers, render_upstream_file
from deployflow.spec import SpecError, load_spec, parse_spec
from tests.samples import spec_data

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

STABLE = Instance("v1", "127.0.0.1", 8001)
CANARY = Instance("v2", "10.0.0.7", 8002)


@pytest.mark.parametrize(
    ("weight", "servers", "state"),
    [
        (0, [("127.0.0.1:8001", "weight=100")], RouterState("127.0.0.1:8001", None, 0)),
        (
            10,
            [("127.0.0.1:8001", "weight=90"), ("10.0.0.7:8002", "weight=10")],
            RouterState("127.0.0.1:8001", "10.0.0.7:8002", 10),
        ),
        # nginx weights are at least 1: all the traffic to the canary marks the stable down.
        (
            100,
            [("127.0.0.1:8001", "down"), ("10.0.0.7:8002", "weight=100")],
            RouterState("127.0.0.1:8001", "10.0.0.7:8002", 100),
        ),
    ],
)
def test_percentages_become_servers_nginx_accepts(weight, servers, state) -> None:
    assert plan_servers(STABLE, CANARY, weight) == (state, servers)


def test_without_a_stable_server_the_upstream_holds_one_placeholder_that_is_down() -> None:
    assert plan_servers(None, None, 0) == (RouterState(None, None, 0), [("127.0.0.1:1", "down")])


def test_an_ipv6_server_is_bracketed_and_a_host_that_could_inject_config_is_refused() -> None:
    _, servers = plan_servers(Instance("v1", "::1", 80), None, 0)
    assert servers == [("[::1]:80", "weight=100")]
    with pytest.raises(ValueError, match="cannot go into an nginx upstream"):
        plan_servers(Instance("v1", "h; include /etc/passwd", 80), None, 0)
    with pytest.raises(ValueError, match="not a TCP port"):
        plan_servers(Instance("v1", "h", 70000), None, 0)


def test_the_owned_file_holds_the_upstream_and_a_state_server_answering_the_split() -> None:
    state, servers = plan_servers(STABLE, CANARY, 10)
    text = render_upstream_file("shop", "127.0.0.1:8399", state, servers, "abc123")
    assert "upstream shop {\n    server 127.0.0.1:8001 weight=90;\n" in text
    assert "    server 10.0.0.7:8002 weight=10;\n}" in text
    assert "listen 127.0.0.1:8399;" in text
    assert (
        """return 200 '{"canary": "10.0.0.7:8002", "canary_weight": 10, "generation": "abc123", """
        """"stable": "127.0.0.1:8001"}\\n';"""
    ) in text


@pytest.mark.parametrize("weight", [-1, 101, 2.5, True])
def test_a_weight_outside_0_100_is_refused_before_anything_is_written(tmp_path, weight) -> None:
    router = NginxRouter(
        tmp_path / "nginx.conf",
        tmp_path / "up.conf",
        state_listen="127.0.0.1:1",
        frontend_url="http://x",
    )
    with pytest.raises(ValueError, match="canary_weight"):
        router.set_split(STABLE, CANARY, weight)
    assert not (tmp_path / "up.conf").exists()


NGINX = {
    "kind": "nginx",
    "main_config": "/etc/nginx/nginx.conf",
    "upstream_file": "/etc/nginx/deployflow/shop.conf",
    "state_listen": "127.0.0.1:8399",
    "frontend_url": "https://shop.example/",
}


def test_a_spec_section_builds_the_router_with_the_default_commands() -> None:
    spec = parse_spec(spec_data(router=NGINX))
    router = registry.build("router", spec.router, BuildContext(env={}))
    assert isinstance(router, NginxRouter)
    assert router.frontend_url == "https://shop.example"
    assert router.test_command == ["/usr/sbin/nginx", "-t", "-q", "-c", "/etc/nginx/nginx.conf"]
    assert router.reload_command == [
        "/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf", "-s", "reload",
    ]  # fmt: skip
    spec = parse_spec(
        spec_data(router={**NGINX, "reload_command": ["systemctl", "reload", "nginx"]})
    )
    router = registry.build("router", spec.router, BuildContext(env={}))
    assert router.reload_command == ["systemctl", "reload", "nginx"]


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"state_listen": "8399"}, "router.state_listen", "host:port"),
        ({"upstream": "shop stable"}, "router.upstream", "pattern"),
        ({"reload_command": "systemctl reload nginx"}, "router.reload_command", "argv lists"),
        ({"reload_timeout": "10"}, "router.reload_timeout", "duration"),
        ({"upstream_fle": "x"}, "router.upstream_fle", "unknown key"),
    ],
)
def test_bad_nginx_settings_name_the_field(change, field, message) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(router={**NGINX, **change}))
    found = dict(error.value.problems)
    assert field in found, error.value.problems
    assert message in found[field]


def test_the_nginx_sandbox_example_is_a_valid_spec(tmp_path: Path) -> None:
    env = {
        "DEPLOYFLOW_SANDBOX_STATE_DIR": str(tmp_path),
        "DEPLOYFLOW_SANDBOX_NGINX_CONFIG": str(tmp_path / "nginx" / "nginx.conf"),
        "DEPLOYFLOW_SANDBOX_NGINX_UPSTREAM_FILE": str(tmp_path / "nginx" / "up.conf"),
        "DEPLOYFLOW_SANDBOX_NGINX_STATE_LISTEN": "127.0.0.1:8399",
        "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:8080",
        "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:9090",
    }
    spec = load_spec(EXAMPLES / "sandbox-nginx.yaml", env=env)
    router = registry.build("router", spec.router, BuildContext(env={}))
    assert isinstance(router, NginxRouter)
    assert router.upstream_file == tmp_path / "nginx" / "up.conf"
    assert router.state_listen == "127.0.0.1:8399"
