"""Blue-green in the core: the phases, green's checks in isolation, the probe traffic."""

from __future__ import annotations

import httpx
import pytest

from deployflow.bluegreen import (
    check_in_isolation,
    isolation_trigger,
    probe_urls,
    send_probe,
    switch_plan,
)
from deployflow.fakes.backends import FakeService
from deployflow.spec import SmokeRequest

pytestmark = pytest.mark.unit

SMOKE = [
    SmokeRequest(name="checkout", path="/api/checkout"),
    SmokeRequest(name="home", path="/", method="HEAD"),
]


def test_the_switch_plan_gives_green_no_traffic_until_the_one_switch() -> None:
    phases = switch_plan(60.0, 600.0)
    assert [(p.name, p.green_weight, p.observe_seconds) for p in phases] == [
        ("isolation", 0, 60.0),
        ("switch", 100, 0.0),
        ("keep_previous", 100, 600.0),
        ("promote", 100, 0.0),
    ]


def test_isolation_checks_go_to_green_directly_never_through_the_router() -> None:
    service = FakeService()
    service.run_stable("v1")
    green = service.target.start("v2")
    service.behave("v2", broken_paths=frozenset({"/api/checkout"}))
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host}:{request.url.port}")
        return service.transport.handle_request(request)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        report = check_in_isolation(client, service.target, green, SMOKE)
    assert set(seen) == {green.address}
    assert not report.ok
    trigger = isolation_trigger("v2", report)
    assert trigger is not None
    assert (trigger.stage, trigger.weight, trigger.metric) == (0, 0, "critical_path")
    assert "no user traffic reached it" in trigger.reason
    service.behave("v2", broken_paths=frozenset())
    with httpx.Client(transport=service.transport) as client:
        assert (
            isolation_trigger("v2", check_in_isolation(client, service.target, green, SMOKE))
            is None
        )


def test_probe_traffic_cycles_over_the_smoke_paths_or_the_health_url() -> None:
    service = FakeService()
    green = service.target.start("v2")
    urls = probe_urls(service.target, green, SMOKE, 5)
    assert urls == [
        ("GET", f"{green.base_url}/api/checkout"),
        ("HEAD", f"{green.base_url}/"),
        ("GET", f"{green.base_url}/api/checkout"),
        ("HEAD", f"{green.base_url}/"),
        ("GET", f"{green.base_url}/api/checkout"),
    ]
    assert probe_urls(service.target, green, [], 2) == [("GET", f"{green.base_url}/healthz")] * 2
    with httpx.Client(transport=service.transport) as client:
        assert send_probe(client, urls) == 0
        service.target.stop("v2")  # the fake then answers 503: an answer, counted by the metrics
        assert send_probe(client, urls) == 0

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        assert send_probe(client, urls) == 5
