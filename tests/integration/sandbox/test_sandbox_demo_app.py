"""The demo service over real HTTP: endpoints, what its metrics count, fault injection."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deployflow.polling import wait_for
from deployflow.providers.base import Instance
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.sandbox.demo_app import FAULTS_ENV
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Instance]]:
    faults = {"v2": {"error_rate": 1.0, "latency_ms": 50}}
    target = LocalProcessTarget(
        DEMO_APP_COMMAND,
        state_dir=tmp_path_factory.mktemp("demo"),
        env={FAULTS_ENV: json.dumps(faults)},
    )
    try:
        yield {"v1": target.start("v1"), "v2": target.start("v2")}
    finally:
        target.stop_all()


def _samples(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base_url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_app_endpoints_name_the_version_and_only_they_are_counted(apps):
    base = apps["v1"].base_url
    for path in ("/", "/api/items", "/api/checkout", "/api/items"):
        response = httpx.get(base + path)
        assert response.status_code == 200
        assert response.json()["version"] == "v1"
    for _ in range(3):
        httpx.get(base + "/healthz")
    assert httpx.get(base + "/nope").status_code == 404

    samples = _samples(base)
    counted = {
        (dict(labels)["path"], dict(labels)["code"]): value
        for (name, labels), value in samples.items()
        if name == "deployflow_demo_http_requests_total"
    }
    ok = {path: n for (path, code), n in counted.items() if code == "200"}
    assert ok == {"/": 1, "/api/items": 2, "/api/checkout": 1}
    # The error series exist from the start at 0, so rate() sees a canary's first errors.
    assert {path: n for (path, code), n in counted.items() if code == "500"} == {
        "/": 0,
        "/api/items": 0,
        "/api/checkout": 0,
    }
    count = samples[("deployflow_demo_http_request_duration_seconds_count", (("version", "v1"),))]
    assert count == 4


def test_faulty_version_fails_requests_but_passes_its_health_check(apps):
    base = apps["v2"].base_url
    assert httpx.get(base + "/healthz").json() == {"status": "ok", "version": "v2"}
    response = httpx.get(base + "/api/checkout")
    assert response.status_code == 500
    assert response.json() == {"error": "injected fault", "version": "v2"}
    samples = _samples(base)
    key = (
        "deployflow_demo_http_requests_total",
        (("code", "500"), ("path", "/api/checkout"), ("version", "v2")),
    )
    assert samples[key] == 1
    slow_sum = samples[("deployflow_demo_http_request_duration_seconds_sum", (("version", "v2"),))]
    assert slow_sum >= 0.05 + 0.015  # injected latency on top of the base latency


def test_traffic_runs_until_stopped_and_says_why_it_ended_otherwise() -> None:
    from deployflow.sandbox.traffic import TrafficGenerator

    endless = TrafficGenerator("http://127.0.0.1:9", rps=50, workers=1).start()
    bounded = TrafficGenerator("http://127.0.0.1:9", rps=50, workers=1, max_duration=0.3).start()
    try:
        reason = wait_for(
            lambda: bounded.stopped_reason, timeout=10, interval=0.05, what="bounded to end"
        )
        assert reason == "max_duration of 0.3 s reached"
        assert not bounded.running
        assert endless.running
        assert endless.stopped_reason is None
        assert endless.transport_errors > 0  # it kept sending (nothing listens on port 9)
    finally:
        endless.stop()
        bounded.stop()
    assert endless.stopped_reason is None  # stopped on purpose: nothing to report
