"""Pure logic of the sandbox pieces: argv templates, fault parsing, HAProxy state parsing."""

from __future__ import annotations

import json
import random

import pytest

from deployflow.providers.base import Instance
from deployflow.providers.haproxy import HAProxyRouter, parse_servers_state
from deployflow.providers.local_process import LocalProcessTarget, render_command
from deployflow.sandbox.demo_app import DemoApp, Fault, FaultConfigError, parse_faults
from deployflow.sandbox.haproxy import render_config as render_haproxy_config
from deployflow.sandbox.prometheus import render_config as render_prometheus_config
from deployflow.sandbox.traffic import TrafficGenerator

pytestmark = pytest.mark.unit

VALUES = {"version": "v2", "port": "8081", "host": "127.0.0.1", "python": "/usr/bin/python3"}

# Captured from HAProxy 2.6.12 after: canary re-pointed to port 8080, weight 25, state ready.
# The canary keeps admin state 4 (CMAINT, "disabled" in the config) while it serves traffic.
SERVERS_STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 app 1 stable 127.0.0.1 0 5 100 100 3 1 0 0 8 0 0 0 - 1 - 0 0 - - 0\n"
    "3 app 2 canary 127.0.0.1 2 4 25 0 1 1 0 0 8 0 0 0 - 8080 - 0 0 - - 0\n"
    "\n"
)


# -- argv templates -------------------------------------------------------------------------------


def test_render_command_substitutes_each_argument_without_splitting():
    template = ["{python}", "-m", "app", "--listen={host}:{port}", "--name", "svc {version}"]
    assert render_command(template, VALUES) == [
        "/usr/bin/python3", "-m", "app", "--listen=127.0.0.1:8081", "--name", "svc v2",
    ]  # fmt: skip


def test_render_command_leaves_json_braces_alone():
    assert render_command(["--faults", '{"v2": {"error_rate": 1}}'], VALUES) == [
        "--faults",
        '{"v2": {"error_rate": 1}}',
    ]


def test_render_command_rejects_unknown_placeholder_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"\{verison\} is unknown; allowed: \{version\}"):
        render_command(["app", "--version", "{verison}"], VALUES)


@pytest.mark.parametrize("template", ["python -m app", []])
def test_render_command_rejects_shell_strings_and_empty_lists(template):
    with pytest.raises(ValueError, match="non-empty argv list"):
        render_command(template, VALUES)


def test_target_rejects_a_bad_template_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"\{prot\} is unknown"):
        LocalProcessTarget(["app", "{prot}"], state_dir=tmp_path)


@pytest.mark.parametrize("version", ["", "../etc", "v 2", "-rf", "a" * 129])
def test_target_rejects_versions_that_are_not_safe_file_names(tmp_path, version):
    target = LocalProcessTarget(["app"], state_dir=tmp_path)
    with pytest.raises(ValueError, match="version"):
        target.start(version)


# -- fault injection ------------------------------------------------------------------------------


def test_parse_faults_reads_each_version():
    faults = parse_faults('{"v2": {"error_rate": 0.2, "latency_ms": 300}, "v3": {"latency_ms": 5}}')
    assert faults == {
        "v2": Fault(error_rate=0.2, latency_ms=300.0),
        "v3": Fault(error_rate=0.0, latency_ms=5.0),
    }


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_parse_faults_unset_means_no_faults(raw):
    assert parse_faults(raw) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"v2": 0.2}', r"\['v2'\] must be an object"),
        ('{"v2": {"error_rate": 1.5}}', r"\['v2'\]\.error_rate must be between 0 and 1"),
        ('{"v2": {"error_rate": "high"}}', r"error_rate must be a finite number"),
        ('{"v2": {"error_rate": true}}', r"error_rate must be a finite number"),
        ('{"v2": {"latency_ms": -1}}', r"latency_ms must be >= 0"),
        ('{"v2": {"latency": 300}}', r"unknown key\(s\) \['latency'\]; allowed"),
        ('{"v2": {"error_paths": "/"}}', r"error_paths must be a list of app paths"),
        ('{"v2": {"error_paths": ["/healthz"]}}', r"error_paths must be a list of app paths"),
        ('{"v2": {"random_error_rate": -0.1}}', r"random_error_rate must be between 0 and 1"),
        ('{"v2": {"latency_tail": 2}}', r"latency_tail must be between 0 and 1"),
        ('{"v2": {"latency_factor": 0}}', r"latency_factor must be above 0 and at most 100"),
    ],
)
def test_parse_faults_names_the_bad_field(raw, message):
    with pytest.raises(FaultConfigError, match=message):
        parse_faults(raw)


def _count(app: DemoApp, code: str, path: str) -> float:
    value = app.metrics.registry.get_sample_value(
        "deployflow_demo_http_requests_total", {"version": app.version, "code": code, "path": path}
    )
    return value or 0.0


def test_demo_app_fails_the_configured_fraction_and_counts_by_code():
    app = DemoApp("v2", Fault(error_rate=0.5), rng=random.Random(7), base_latency=0.0)
    statuses = [app.handle_app_request("/api/items")[0] for _ in range(40)]
    failures = statuses.count(500)
    assert 10 <= failures <= 30  # seeded: deterministic, but stated as the property we mean
    assert _count(app, "500", "/api/items") == failures
    assert _count(app, "200", "/api/items") == 40 - failures


def test_demo_app_error_paths_limit_the_fault_to_those_paths():
    fault = parse_faults('{"v4": {"error_rate": 1.0, "error_paths": ["/"]}}')["v4"]
    app = DemoApp("v4", fault, base_latency=0.0)
    smoke = [app.handle_app_request(p)[0] for p in ("/api/items", "/api/checkout") * 5]
    assert smoke == [200] * 10
    assert [app.handle_app_request("/")[0] for _ in range(3)] == [500] * 3


def test_parse_faults_reads_the_noise_profile():
    raw = '{"v2": {"random_error_rate": 0.06, "latency_tail": 0.04, "latency_factor": 2.5}}'
    assert parse_faults(raw) == {
        "v2": Fault(random_error_rate=0.06, latency_tail=0.04, latency_factor=2.5)
    }


def test_random_errors_vary_between_windows_unlike_spread_ones():
    # error_rate fails exactly 1 in 4 of every 20 requests; random_error_rate at the same rate
    # gives windows with more and fewer failures, as a real flaky service does.
    app = DemoApp("v2", Fault(random_error_rate=0.25), rng=random.Random(3), base_latency=0.0)
    windows = [[app.handle_app_request("/")[0] for _ in range(20)].count(500) for _ in range(3)]
    assert len(set(windows)) > 1
    assert 0 < sum(windows) < 60


def test_latency_factor_multiplies_the_latency():
    app = DemoApp("v2", Fault(latency_factor=3.0), rng=random.Random(1), base_latency=0.01)
    for _ in range(3):
        app.handle_app_request("/")
    total = app.metrics.registry.get_sample_value(
        "deployflow_demo_http_request_duration_seconds_sum", {"version": "v2"}
    )
    assert total is not None
    assert total >= 3 * 0.03


def test_demo_app_healthy_version_is_fast_and_never_fails():
    app = DemoApp("v1", Fault(), rng=random.Random(1))
    results = [app.handle_app_request("/")[0] for _ in range(5)]
    assert results == [200] * 5
    total = app.metrics.registry.get_sample_value(
        "deployflow_demo_http_request_duration_seconds_sum", {"version": "v1"}
    )
    assert total is not None
    assert 5 * 0.015 <= total < 5 * 0.05


# -- HAProxy --------------------------------------------------------------------------------------


def test_parse_servers_state_reads_address_weight_and_maintenance():
    servers = parse_servers_state(SERVERS_STATE)
    stable, canary = servers["stable"], servers["canary"]
    assert (stable.address, stable.port, stable.weight) == ("127.0.0.1", 1, 100)
    assert stable.in_maintenance  # still "disabled" from the config
    assert stable.effective_weight == 0
    assert (canary.address, canary.port, canary.weight) == ("127.0.0.1", 8080, 25)
    assert not canary.in_maintenance  # CMAINT alone does not stop traffic
    assert canary.effective_weight == 25


@pytest.mark.parametrize("answer", ["Can't find backend.\n\n", "", "1\n"])
def test_parse_servers_state_rejects_error_answers(answer):
    with pytest.raises(ValueError, match="not a 'show servers state' answer"):
        parse_servers_state(answer)


def test_parse_servers_state_rejects_truncated_lines():
    truncated = SERVERS_STATE.replace(" - - 0\n\n", "\n")
    with pytest.raises(ValueError, match="short line"):
        parse_servers_state(truncated)


@pytest.mark.parametrize(
    ("weight", "message"),
    [(101, "between 0 and 100"), (-1, "between 0 and 100"), (True, "integer"), (2.5, "integer")],
)
def test_set_split_validates_the_weight_before_talking_to_haproxy(tmp_path, weight, message):
    router = HAProxyRouter(tmp_path / "missing.sock", frontend_url="http://127.0.0.1:1")
    stable = Instance("v1", "127.0.0.1", 9001)
    with pytest.raises(ValueError, match=message):
        router.set_split(stable, Instance("v2", "127.0.0.1", 9002), weight)


def test_set_split_refuses_canary_weight_without_canary(tmp_path):
    router = HAProxyRouter(tmp_path / "missing.sock", frontend_url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="no canary instance"):
        router.set_split(Instance("v1", "127.0.0.1", 9001), None, 10)


def test_haproxy_config_declares_disabled_placeholder_slots(tmp_path):
    config = render_haproxy_config(tmp_path / "h.sock", 8080)
    assert f"stats socket {tmp_path / 'h.sock'} mode 600 level admin" in config
    assert "bind 127.0.0.1:8080" in config
    assert "server stable 127.0.0.1:1 weight 100 disabled" in config
    assert "server canary 127.0.0.1:1 weight 0 disabled" in config


def test_prometheus_config_watches_the_targets_file(tmp_path):
    config = json.loads(render_prometheus_config(tmp_path / "targets.json", "1s"))
    assert config["global"]["scrape_interval"] == "1s"
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"] == [
        {"files": [str(tmp_path / "targets.json")], "refresh_interval": "1s"}
    ]


# -- small pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rps": 0}, "rps"), ({"paths": ()}, "paths"), ({"max_duration": 0}, "max_duration"),
     ({"workers": 0}, "workers")],
)  # fmt: skip
def test_traffic_generator_validates_its_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrafficGenerator("http://127.0.0.1:1", **kwargs)


def test_a_demo_keeps_its_tracking_database_in_its_own_folder_unless_told_to_share(
    tmp_path, monkeypatch
):
    from deployments.demo import own_tracking

    monkeypatch.delenv("DEPLOYFLOW_DATA_DIR", raising=False)
    monkeypatch.delenv("DEPLOYFLOW_DATABASE_URL", raising=False)
    assert own_tracking(tmp_path / "sandbox") == {
        "DEPLOYFLOW_DATA_DIR": str(tmp_path.resolve() / "sandbox" / "tracking")
    }
    monkeypatch.setenv("DEPLOYFLOW_DATA_DIR", str(tmp_path / "shared"))
    assert own_tracking(tmp_path / "sandbox") == {}
