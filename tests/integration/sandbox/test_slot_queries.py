"""``{slot}`` in Prometheus queries, against HAProxy's own exporter (which labels its series by
server, the slot) scraped by a real Prometheus: through a promotion, each version is measured
in the slot it sat in, and the stable slot's requests from before the promotion (the previous
version's) are never counted as the new stable's."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployflow.polling import wait_for
from deployflow.processes import write_json_atomic
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.prometheus import MetricQueries, PrometheusMetrics
from deployflow.providers.slots import RecordingRouter, SlotHistory
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.prometheus import LocalPrometheus
from tests.integration.sandbox.test_access_log_routers import PLAIN_APP

pytestmark = pytest.mark.integration

SERIES = 'haproxy_server_http_responses_total{proxy="app",server="{slot}"}'
# Requests counted without increase()'s extrapolation, so the figures are exact.
COUNT = f"sum(max_over_time({SERIES}[{{window}}])) - sum(min_over_time({SERIES}[{{window}}]))"
QUERIES = MetricQueries(
    error_rate=f"0 * ({COUNT})",
    p95_latency='max(haproxy_server_response_time_average_seconds{proxy="app",server="{slot}"})',
    request_count=COUNT,
)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalHAProxy, LocalPrometheus, LocalProcessTarget]]:
    state = tmp_path_factory.mktemp("slots")
    target = LocalProcessTarget(PLAIN_APP, state_dir=state / "apps")
    with LocalHAProxy(state / "haproxy", exporter=True) as haproxy:
        targets = state / "targets.json"
        address = haproxy.exporter_url.removeprefix("http://").removesuffix("/metrics")
        write_json_atomic(targets, [{"targets": [address], "labels": {}}])
        try:
            with LocalPrometheus(state / "prometheus", targets) as prometheus:
                yield haproxy, prometheus, target
        finally:
            target.stop_all()


def scraped(prometheus: LocalPrometheus, slot: str, total: int) -> bool:
    """Prometheus holds the slot's counter at ``total``."""
    found = prometheus.query(f"sum({SERIES.replace('{slot}', slot)})")
    return bool(found) and float(found[0]["value"][1]) == total


def scraped_after(prometheus: LocalPrometheus, slot: str, at: float) -> bool:
    """Prometheus scraped the slot's counter after ``at``."""
    found = prometheus.query(f"max(timestamp({SERIES.replace('{slot}', slot)}))")
    return bool(found) and float(found[0]["value"][1]) > at


def test_each_version_is_measured_in_its_slot_through_a_promotion(
    stack: tuple[LocalHAProxy, LocalPrometheus, LocalProcessTarget], tmp_path: Path
) -> None:
    haproxy, prometheus, target = stack
    v1, v2 = target.start("v1"), target.start("v2")
    history = SlotHistory(tmp_path / "slots.jsonl")
    router = RecordingRouter(haproxy.router(), history, target)
    metrics = PrometheusMetrics(prometheus.url, QUERIES, timeout=3, slot_history=history)
    answered: Counter[str] = Counter()
    with httpx.Client(timeout=5) as client:

        def send(n: int) -> None:
            for _ in range(n):
                answered[client.get(f"{haproxy.frontend_url}/api/items").json()["version"]] += 1

        router.set_split(v1, v2, 50)
        wait_for(lambda: scraped(prometheus, "canary", 0), timeout=20, what="exporter scraped")
        send(60)
        stable_before = answered["v1"]
        wait_for(lambda: scraped(prometheus, "stable", stable_before), timeout=20, what="scrape")
        wait_for(lambda: scraped(prometheus, "canary", answered["v2"]), timeout=20, what="scrape")
        canary_before = answered["v2"]
        promoted_at = time.time()
        router.promote(v2)
        # One scrape of the stable slot after the promotion and before its new requests.
        wait_for(
            lambda: scraped_after(prometheus, "stable", promoted_at), timeout=20, what="a scrape"
        )
        send(30)
        wait_for(lambda: scraped(prometheus, "stable", stable_before + 30), timeout=20, what="s")

    assert answered["v2"] == canary_before + 30
    # v2 over a window spanning the promotion: its time in the stable slot, cut at the change;
    # the stable slot's 30-odd requests from before (v1's) are not v2's.
    assert metrics.sample("v2", 60).requests == 30
    # v1 sat in the stable slot until the promotion: its figures end there.
    assert metrics.sample("v1", 60).requests == stable_before
    assert metrics.sample("v3", 60).requests is None  # never in a slot: no data
    # validate --live tries each query the same way: for the live version, in its slot.
    live = metrics.probe("v2", 60)
    assert [c.status for c in live] == ["ok"] * 3, live
    (missing,) = metrics.probe("v3", 60)
    assert missing.status == "fail"
    assert "v3 sat in no router slot" in missing.detail
