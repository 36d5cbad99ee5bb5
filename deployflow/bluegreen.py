"""Blue-green in the core: the switch plan, green's checks in isolation, the probe traffic.

Blue (the version serving now) keeps the router's stable slot; green (the new version) is started
in the canary slot with no user traffic. Green is judged in isolation first (health, the smoke
requests and critical paths sent straight to green's own address, and its error rate and P95 under
probe traffic), then all traffic moves in one switch: ``set_split(blue, green, 100)``, which leaves
blue ready at weight 0 so that switching back is one call, ``set_split(blue, None, 0)``. Blue is
kept warm for ``keep_previous`` while green is observed like a stage; only then is green promoted
to the stable slot and blue retired.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from deployflow.providers.base import Instance, Target
from deployflow.release import Trigger
from deployflow.spec import SmokeRequest
from deployflow.verify import VerificationReport, check_health, check_smoke


@dataclass(frozen=True)
class Phase:
    """One phase of a blue-green release: where users' traffic is, and how long it is watched."""

    name: str
    green_weight: int
    observe_seconds: float
    what: str


def switch_plan(observe_seconds: float, keep_previous_seconds: float) -> tuple[Phase, ...]:
    """The phases of a blue-green release, in order."""
    return (
        Phase(
            "isolation",
            0,
            observe_seconds,
            "green runs beside blue with no user traffic; health, smoke requests and probe "
            "traffic straight to green",
        ),
        Phase(
            "switch",
            100,
            0.0,
            "one router call moves all traffic to green; blue stays ready at weight 0",
        ),
        Phase(
            "keep_previous",
            100,
            keep_previous_seconds,
            "green observed like a stage while blue stays warm; any trigger switches back",
        ),
        Phase("promote", 100, 0.0, "green takes the stable slot; blue is retired"),
    )


def check_in_isolation(
    client: httpx.Client, target: Target, green: Instance, smoke: Sequence[SmokeRequest]
) -> VerificationReport:
    """Green's health endpoint and every smoke request, sent to green's own address (never
    through the router, so no user meets green while it is judged)."""
    checks = [check_health(client, target.health_url(green), name=f"health: {green.version}")]
    checks.extend(check_smoke(client, green.base_url, s) for s in smoke)
    return VerificationReport(tuple(checks))


def probe_urls(
    target: Target, green: Instance, smoke: Sequence[SmokeRequest], count: int
) -> list[tuple[str, str]]:
    """``count`` (method, URL) pairs cycling over the smoke paths (the health URL when the spec has
    no smoke requests): the probe traffic green's metrics are measured under."""
    if count < 1:
        return []
    routes = [(s.method, green.base_url + s.path) for s in smoke] or [
        ("GET", target.health_url(green))
    ]
    return list(itertools.islice(itertools.cycle(routes), count))


def send_probe(client: httpx.Client, requests: Sequence[tuple[str, str]]) -> int:
    """Send the probe requests; returns how many got no answer (a status is an answer: the
    metrics judge it)."""
    unanswered = 0
    for method, url in requests:
        try:
            client.request(method, url)
        except httpx.HTTPError:
            unanswered += 1
    return unanswered


def isolation_trigger(version: str, report: VerificationReport) -> Trigger | None:
    """Why green must not get traffic after its checks in isolation, or None when they passed."""
    failure = report.first_failure
    if failure is None:
        return None
    return Trigger(
        stage=0,
        weight=0,
        metric=failure.metric or failure.name,
        value=failure.value,
        threshold=failure.threshold,
        reason=f"green {version} failed in isolation (no user traffic reached it): "
        f"{failure.name}: {failure.detail}",
    )
