"""`deployflow init` without a terminal: the spec it writes loads with the real spec loader for
every target and router, its answers stay strings whatever they hold, and bad or missing flags
exit 2 naming the flag with nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployflow.scaffold import (
    InitAnswers,
    PrometheusNames,
    parse_all_servers_state,
    render_spec,
    slot_backend,
    suggest_metric_names,
)
from deployflow.spec import load_spec, spec_from_text
from deployments.cli import main

PY = sys.executable
NAMES = PrometheusNames(url="http://127.0.0.1:9090", requests_metric="shop_http_requests_total")


def answers(target: str, router: str, **changes: object) -> InitAnswers:
    values: dict[str, object] = {
        "service": "shop",
        "target": target,
        "router": router,
        "frontend_url": "http://127.0.0.1:8080",
        "metrics": NAMES,
        "command": [PY, "-m", "shop", "--port", "{port}", "--version", "{version}"],
        "state_dir": ".deployflow/shop",
        "start": [PY, "hooks/shop.py", "start", "{version}"],
        "stop": [PY, "hooks/shop.py", "stop", "{version}"],
        "status": [PY, "hooks/shop.py", "status"],
        "repository": "acme/shop",
        "status_url": "https://shop.internal/versions",
        "instance_url": "https://{version}.shop.internal",
        "haproxy_socket": "/run/haproxy/admin.sock",
        "nginx_config": "/etc/nginx/nginx.conf",
        "nginx_upstream_file": "/etc/nginx/deployflow/shop.conf",
    }
    values.update(changes)
    return InitAnswers(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
@pytest.mark.parametrize("target", ["local-process", "command", "github-actions"])
def test_the_written_spec_loads_with_the_spec_loader(target, router, tmp_path):
    spec = spec_from_text(render_spec(answers(target, router)), "init", tmp_path)
    assert spec.service == "shop"
    assert spec.target.kind == target
    assert spec.router.kind == router
    assert spec.router.frontend_url == "http://127.0.0.1:8080"
    queries = spec.metrics.queries
    assert queries.error_rate.startswith(
        '(sum(rate(shop_http_requests_total{version="{version}",code=~"5.."}[{window}]))'
        " or vector(0))"
    )
    assert queries.latency_buckets is not None
    assert "http_request_duration_seconds_bucket" in queries.latency_buckets
    assert spec.smoke[0].path == "/healthz"


def test_answers_stay_strings_whatever_they_hold(tmp_path):
    odd = [PY, "-c", "print('x: #y')", "{port}", "it's", "{version}"]
    written = answers(
        "local-process",
        "haproxy",
        command=odd,
        frontend_url="http://127.0.0.1:8080/#x",
        probed=["haproxy said: 'ok'\nservice: evil"],
    )
    text = render_spec(written)
    spec = spec_from_text(text, "init", tmp_path)
    assert spec.target.command == odd
    assert spec.service == "shop"  # a probe line with a line break stays one comment line each
    assert all(line.startswith("#") for line in text.splitlines()[:5])


def test_metric_names_are_suggested_only_when_unambiguous():
    names = ["up", "shop_http_requests_total", "shop_http_request_duration_seconds_bucket"]
    assert suggest_metric_names(names) == (
        "shop_http_requests_total",
        "shop_http_request_duration_seconds",
    )
    assert suggest_metric_names([*names, "other_http_requests_total"]) == (
        None,
        "shop_http_request_duration_seconds",
    )


SERVERS_STATE = """1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_port
3 app 1 stable 127.0.0.1 2 0 100 9001
3 app 2 canary 127.0.0.1 0 1 0 9002
4 stats 1 local 127.0.0.1 2 0 1 8404
"""


def test_the_backend_holding_both_slots_is_found():
    servers = parse_all_servers_state(SERVERS_STATE)
    assert servers == {"app": ["stable", "canary"], "stats": ["local"]}
    assert slot_backend(servers, "stable", "canary") == "app"
    assert slot_backend({"a": ["stable"], "b": ["canary"]}, "stable", "canary") is None


FLAGS = [
    "--service", "shop", "--target", "local-process",
    "--command", f"{PY} -m shop --port {{port}} --version {{version}}",
    "--router", "haproxy", "--haproxy-socket", "/run/haproxy/admin.sock",
    "--frontend-url", "http://127.0.0.1:8080", "--prometheus-url", "http://127.0.0.1:9090",
    "--no-probe",
]  # fmt: skip


def test_flags_write_a_spec_that_validates(tmp_path, capsys):
    out = tmp_path / "shop.yaml"
    assert main(["init", *FLAGS, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    spec = load_spec(out)
    assert spec.target.state_dir == tmp_path / ".deployflow" / "shop"
    assert main(["validate", str(out)]) == 0


def test_an_existing_file_is_replaced_only_with_force(tmp_path, capsys):
    out = tmp_path / "shop.yaml"
    out.write_text("mine\n")
    assert main(["init", *FLAGS, "-o", str(out)]) == 2
    assert "--output" in capsys.readouterr().err
    assert out.read_text() == "mine\n"
    assert main(["init", *FLAGS, "-o", str(out), "--force"]) == 0
    assert load_spec(out).service == "shop"


@pytest.mark.parametrize(
    ("drop", "change", "named"),
    [
        ("--service", None, "--service"),
        ("--haproxy-socket", None, "--haproxy-socket"),
        (None, ("--frontend-url", "not a url"), "--frontend-url"),
        (None, ("--health-path", "healthz"), "--health-path"),
        (None, ("--command", "'unclosed"), "--command"),
        (None, ("--service", "Shop Service!"), "--service"),
    ],
)
def test_a_bad_or_missing_flag_exits_2_naming_it(tmp_path, capsys, drop, change, named):
    argv = list(FLAGS)
    if drop:
        i = argv.index(drop)
        del argv[i : i + 2]
    if change:
        argv += list(change)  # the last of a repeated flag wins
    out = tmp_path / "shop.yaml"
    assert main(["init", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {named}" in err, err
    assert not out.exists()


def test_an_unknown_choice_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["init", *FLAGS, "--router", "traefik", "-o", str(tmp_path / "x.yaml")])
    assert exc.value.code == 2
    assert "--router" in capsys.readouterr().err


def test_a_directory_as_output_is_refused(tmp_path, capsys):
    assert main(["init", *FLAGS, "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_no_file_is_left_by_a_refused_run(tmp_path: Path):
    assert main(["init", "--no-probe", "-o", str(tmp_path / "x.yaml")]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("router", ["haproxy", "nginx"])
def test_a_service_without_metrics_gets_the_routers_access_log(router, tmp_path, capsys):
    out = tmp_path / "plain.yaml"
    argv = [a for a in FLAGS if a not in ("--prometheus-url", "http://127.0.0.1:9090")]
    argv += ["--router", router, "--metrics", "access-log", "--access-log", "/var/log/lb.log"]
    argv += ["--nginx-config", "/etc/nginx/nginx.conf", "--nginx-upstream-file", "/etc/up.conf"]
    assert main(["init", *argv, "-o", str(out)]) == 0, capsys.readouterr().err
    spec = load_spec(out)
    assert (spec.metrics.kind, spec.metrics.format) == ("access-log", router)
    assert str(spec.metrics.path) == "/var/log/lb.log"
    text = out.read_text()
    assert ("log_format deployflow" in text) == (router == "nginx")


def test_the_access_log_is_required_for_the_access_log_kind(tmp_path, capsys):
    argv = [*FLAGS, "--metrics", "access-log"]
    assert main(["init", *argv, "-o", str(tmp_path / "x.yaml")]) == 2
    assert "error: --access-log" in capsys.readouterr().err
