"""Probe traffic sent straight to a canary: what it sends, how it counts what came back."""

from __future__ import annotations

import httpx
import pytest

from deployflow.analysis import Thresholds
from deployflow.polling import wait_for
from deployflow.probe import ProbeTraffic
from deployflow.rollout import plan_evidence
from deployflow.spec import SmokeRequest
from tests.samples import problems, spec_data

pytestmark = pytest.mark.unit

SMOKE = [SmokeRequest(name="items", path="/api/items"), SmokeRequest(name="pay", path="/pay")]


def test_the_probe_sends_the_smoke_requests_in_turn_to_the_canary_and_counts_the_answers() -> None:
    seen: list[str] = []

    def canary(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/pay":
            if len(seen) % 4 == 0:
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(500)
        return httpx.Response(200)

    with ProbeTraffic(
        "http://127.0.0.1:8001/", SMOKE, rate=500.0, transport=httpx.MockTransport(canary)
    ) as probe:
        wait_for(lambda: probe.tally.sent >= 8 or None, timeout=10, what="eight probe requests")
    tally = probe.tally
    assert seen[:2] == ["http://127.0.0.1:8001/api/items", "http://127.0.0.1:8001/pay"]
    assert tally.sent == len(seen)
    # Every /pay failed: half of them answered 500, the others not at all.
    assert tally.failed + tally.unanswered == tally.sent // 2
    assert tally.unanswered >= 1
    assert tally.describe().startswith(f"{tally.sent} probe requests sent straight to the canary")


def test_a_probe_needs_a_rate_and_something_to_send() -> None:
    with pytest.raises(ValueError, match="rate"):
        ProbeTraffic("http://x", SMOKE, rate=0)
    with pytest.raises(ValueError, match="smoke request"):
        ProbeTraffic("http://x", [], rate=1)


def test_a_spec_with_a_probe_rate_and_no_smoke_requests_is_refused_naming_the_field() -> None:
    found = problems(spec_data(analysis={"probe_rate": 5}))
    assert any("analysis.probe_rate" in problem for problem in found.values()), found


def test_probe_requests_add_to_what_each_stage_gathers() -> None:
    plain = plan_evidence(6.0, 0.005, [5, 25, 50, 100], 600, 1800, 30, Thresholds())
    probed = plan_evidence(6.0, 0.005, [5, 25, 50, 100], 600, 1800, 30, Thresholds(), 2.0)
    assert probed[0].canary_rps == pytest.approx(plain[0].canary_rps + 2.0)
    assert "(2 of them probe requests)" in probed[0].line(0.05, 0.005)
