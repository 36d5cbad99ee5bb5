"""`deployflow validate --live` against the real sandbox (HAProxy, Prometheus, v1 scraped): the
example spec passes every live check; a misspelt metric name fails each query that uses it, by
name; an unreachable router fails as itself."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployflow.polling import wait_for
from deployflow.sandbox.supervisor import Sandbox
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
    assert "live: FAILED, 5 live check(s) failed" in out


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
