"""`deployflow validate --live` and `deployflow init` against the real sandbox (HAProxy,
Prometheus, v1 scraped): the example spec passes every live check; a misspelt metric name fails
each query that uses it, by name; an unreachable router fails as itself; init finds the HAProxy
backend and the metric names by itself and writes a spec that passes; at a terminal it asks."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.polling import wait_for
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND, Sandbox
from deployflow.spec import load_spec
from deployments.cli import main
from tests.backends import build_metrics

pytestmark = pytest.mark.integration

EXAMPLE_SPEC = Path(__file__).parents[3] / "examples" / "sandbox.yaml"
QUERIES = ("error_rate", "p95_latency", "request_count", "latency_buckets", "requests_by_endpoint")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    saved = dict(os.environ)
    with Sandbox(tmp_path_factory.mktemp("live"), rps=30) as sb:
        os.environ.update(sb.env_vars())
        try:
            spec = load_spec(EXAMPLE_SPEC)
            metrics = build_metrics(spec)
            wait_for(
                lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
                timeout=60,
                interval=0.5,
                what="a P95 of v1 over the baseline window",
            )
            yield sb
        finally:
            os.environ.clear()
            os.environ.update(saved)


def live(spec: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["validate", str(spec), "--live", "--json"])
    return code, json.loads(capsys.readouterr().out)


def statuses(result: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in result["live"]["checks"]}


def test_the_example_spec_passes_every_live_check(sandbox, capsys):
    code, result = live(EXAMPLE_SPEC, capsys)
    assert code == 0, result
    assert result["live"]["live_version"] == "v1"
    found = statuses(result)
    for name in ("target", "router", "router.frontend_url", "live version", "health"):
        assert found[name] == "ok", result
    for query in QUERIES:
        assert found[f"metrics.queries.{query}"] == "ok", result


def test_a_misspelt_metric_fails_every_query_naming_it(sandbox, capsys, tmp_path):
    misspelt = tmp_path / "misspelt.yaml"
    text = EXAMPLE_SPEC.read_text().replace("deployflow_demo_http_", "deployflow_demo_htp_")
    misspelt.write_text(text)
    assert main(["validate", str(misspelt)]) == 0  # well formed: only the live check can tell
    capsys.readouterr()

    code, result = live(misspelt, capsys)

    assert code == 1
    assert result["live"]["passed"] is False
    details = {c["name"]: c["detail"] for c in result["live"]["checks"] if c["status"] == "fail"}
    assert set(details) == {f"metrics.queries.{q}" for q in QUERIES}, details
    assert "no data for v1" in details["metrics.queries.request_count"]
    assert (
        "has no metric deployflow_demo_htp_requests_total "
        "(did you mean deployflow_demo_http_requests_total?)"
    ) in details["metrics.queries.request_count"]
    assert (
        "deployflow_demo_http_request_duration_seconds_bucket?"
        in (details["metrics.queries.p95_latency"])
    )

    assert main(["validate", str(misspelt), "--live"]) == 1
    out = capsys.readouterr().out
    assert "fail metrics.queries.error_rate: no data for v1" in out
    assert "ok   router: haproxy backend app" in out
    assert "live: FAILED: 5 of " in out


def test_an_unreachable_router_fails_and_the_queries_are_not_tried(sandbox, capsys, tmp_path):
    moved = tmp_path / "moved.yaml"
    moved.write_text(
        EXAMPLE_SPEC.read_text().replace(
            "admin_socket: ${DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET}",
            f"admin_socket: {tmp_path / 'no-such.sock'}",
        )
    )
    code, result = live(moved, capsys)
    assert code == 1
    found = statuses(result)
    assert found["router"] == "fail"
    assert found["metrics"] == "warn"  # not tried: no live version known
    detail = next(c["detail"] for c in result["live"]["checks"] if c["name"] == "router")
    assert "no-such.sock" in detail
    assert "unreachable" in detail


def test_init_probes_the_running_sandbox_and_writes_a_spec_that_passes_live(
    sandbox, capsys, tmp_path
):
    env = sandbox.env_vars()
    out = tmp_path / "demo.yaml"
    code = main(
        [
            "init", "--no-input", "-o", str(out),
            "--service", "demo", "--target", "local-process",
            "--command", " ".join(DEMO_APP_COMMAND),
            "--state-dir", env["DEPLOYFLOW_SANDBOX_STATE_DIR"],
            "--scrape-targets-file", env["DEPLOYFLOW_SANDBOX_SCRAPE_TARGETS_FILE"],
            "--router", "haproxy", "--haproxy-socket", env["DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET"],
            "--frontend-url", env["DEPLOYFLOW_SANDBOX_FRONTEND_URL"],
            "--prometheus-url", env["DEPLOYFLOW_SANDBOX_PROMETHEUS_URL"],
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    # Neither the backend nor the metric names were given: HAProxy and Prometheus told them.
    assert "backends app: stable, canary" in printed
    spec = load_spec(out)
    assert spec.router.backend == "app"
    assert "deployflow_demo_http_requests_total" in spec.metrics.queries.error_rate
    assert "deployflow_demo_http_request_duration_seconds_bucket" in (
        spec.metrics.queries.p95_latency
    )
    text = out.read_text()
    assert "#     ok   live version: v1 at " in text
    assert "#     ok   metrics.queries.error_rate: " in text

    code, result = live(out, capsys)
    assert code == 0, result
    assert result["live"]["live_version"] == "v1"


def _read_until(fd: int, wanted: str, seen: list[str], deadline: float) -> None:
    while wanted not in "".join(seen):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {wanted!r} in {''.join(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                seen.append(os.read(fd, 4096).decode(errors="replace"))
            except OSError:  # the child closed the terminal
                break


def test_init_asks_at_a_terminal_and_keeps_the_defaults_on_enter(tmp_path):
    out = tmp_path / "shop.yaml"
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployments.cli", "init", "--no-probe", "-o", str(out)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=Path(__file__).parents[3],
    )
    os.close(terminal)
    conversation = [
        ("Service name", "shop"),
        ("How versions start and stop", "command"),
        ("Start hook", f"{sys.executable} hooks/shop.py start {{version}}"),
        ("Stop hook", f"{sys.executable} hooks/shop.py stop {{version}}"),
        ("Status hook", f"{sys.executable} hooks/shop.py status"),
        ("What splits the traffic (haproxy/nginx) [haproxy]", ""),
        ("HAProxy admin socket", "/run/haproxy/admin.sock"),
        ("HAProxy backend holding the slots [app]", "web"),
        ("URL users reach", "http://127.0.0.1:8080"),
        ("Health path [/healthz]", "/health"),
        ("Where the metrics come from", ""),
        ("Prometheus URL [http://127.0.0.1:9090]", ""),
        ("Requests counter [http_requests_total]", "shop_requests_total"),
        ("Latency histogram", ""),
        ("Label naming the version [version]", ""),
        ("Label holding the status code [code]", "status"),
    ]
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        for prompt, answer in conversation:
            _read_until(controller, prompt, seen, deadline)
            seen.clear()
            os.write(controller, answer.encode() + b"\n")
        _read_until(controller, "next: deployflow validate", seen, deadline)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    spec = load_spec(out)
    assert (spec.target.kind, spec.router.kind, spec.router.backend) == (
        "command", "haproxy", "web"
    )  # fmt: skip
    assert spec.target.health_path == "/health"
    assert 'shop_requests_total{version="{version}",status=~"5.."}' in (
        spec.metrics.queries.error_rate
    )
