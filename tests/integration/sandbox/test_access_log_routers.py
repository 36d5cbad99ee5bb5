"""The access logs of a real HAProxy and a real nginx, in the documented formats, give each
version exactly the requests it answered: counted from the answers themselves (the stand-in
service names its version in each body), through a split and a promotion."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from deployflow.polling import wait_for
from deployflow.providers.access_log import AccessLogMetrics
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.slots import RecordingRouter, SlotHistory
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx
from deployflow.sandbox.plain_app import FAULTS_ENV

pytestmark = pytest.mark.integration

PLAIN_APP = (
    "{python}", "-m", "deployflow.sandbox.plain_app",
    "--version", "{version}", "--port", "{port}", "--host", "{host}",
)  # fmt: skip


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalProcessTarget]:
    target = LocalProcessTarget(
        PLAIN_APP,
        state_dir=tmp_path_factory.mktemp("plain"),
        env={FAULTS_ENV: json.dumps({"v2": {"/api/checkout": 0.5}})},
    )
    try:
        yield target
    finally:
        target.stop_all()


@pytest.fixture(scope="module", params=["haproxy", "nginx"])
def proxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalHAProxy | LocalNginx]:
    state = tmp_path_factory.mktemp(request.param)
    server = (
        LocalHAProxy(state, access_log=True) if request.param == "haproxy" else LocalNginx(state)
    )
    with server:
        yield server


def send(client: httpx.Client, url: str, answered: Counter[tuple[str, int]], n: int) -> None:
    for i in range(n):
        path = "/api/checkout" if i % 2 else "/api/items"
        response = client.get(url + path)
        answered[(response.json()["version"], response.status_code)] += 1


def test_each_version_gets_exactly_the_requests_it_answered_across_a_promotion(
    proxy: LocalHAProxy | LocalNginx, target: LocalProcessTarget, tmp_path: Path
) -> None:
    v1, v2 = target.start("v1"), target.start("v2")
    history = SlotHistory(tmp_path / "slots.jsonl")
    router = RecordingRouter(proxy.router(), history, target)
    router.set_split(v1, None, 0)
    kind = "haproxy" if isinstance(proxy, LocalHAProxy) else "nginx"
    metrics = AccessLogMetrics(proxy.access_log, kind, history)
    started = datetime.now(UTC)
    assert metrics.sample("v1", 60).error is None  # the log is there; reading starts here
    answered: Counter[tuple[str, int]] = Counter()
    with httpx.Client(timeout=5) as client:
        router.set_split(v1, v2, 50)
        send(client, proxy.frontend_url, answered, 120)
        router.promote(v2)
        send(client, proxy.frontend_url, answered, 40)

    def figures(version: str) -> tuple[float, float] | None:
        sample = metrics.sample(version, 120)
        total = sum(n for (v, _), n in answered.items() if v == version)
        if sample.requests != total:
            return None  # not all logged yet
        assert sample.error_rate is not None
        return sample.requests, sample.error_rate * sample.requests

    for version in ("v1", "v2"):
        _, errors = wait_for(
            lambda v=version: figures(v),
            timeout=10,
            interval=0.1,
            what=f"{version} logged ({answered}; the log has {metrics.sample(version, 120)})",
        )
        assert errors == answered[(version, 500)]
    assert answered[("v2", 500)] > 0
    assert answered[("v1", 500)] == 0
    # Every version's own histogram, P95 and breakdown, from the log alone.
    canary = metrics.sample("v2", 120)
    assert canary.buckets
    assert canary.p95_seconds is not None
    assert 0.002 < canary.p95_seconds < 1.0
    rows = metrics.breakdown("v2", started - timedelta(seconds=1), datetime.now(UTC)).rows
    assert ("/api/checkout", "500", float(answered[("v2", 500)])) in rows
    assert {r[0] for r in rows} == {"/api/items", "/api/checkout"}
