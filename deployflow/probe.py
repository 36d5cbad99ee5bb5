"""Probe traffic for a canary at low traffic: the spec's smoke requests, sent at a stated rate
straight to the canary's own address while a stage observes it (Flagger's load tester idea).

At a few canary requests a second a stage needs minutes to gather the evidence its verdict needs;
probe requests add to it. They reach the canary as any request does, so a service that exports its
own metrics counts them in the canary's figures: the stage says how many there were, apart from the
user traffic ("of which 120 probe requests"), and what they got. The probe decides nothing itself;
a probe request the canary never saw (its address cannot be reached from here) is only counted as
unanswered.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx

from deployflow.polling import Repeat
from deployflow.spec import SmokeRequest


@dataclass(frozen=True)
class ProbeTally:
    """What the probe sent during a stage, and what came back."""

    sent: int = 0
    failed: int = 0  # answered with an unexpected status (5xx included)
    unanswered: int = 0  # no answer at all (connection refused, timeout)

    def describe(self) -> str:
        """``120 probe requests sent straight to v2 (2 failed, 0 unanswered)``, for people."""
        return (
            f"{self.sent} probe request{'s' if self.sent != 1 else ''} sent straight to the "
            f"canary ({self.failed} failed, {self.unanswered} unanswered)"
        )


class ProbeTraffic(Repeat):
    """Send ``requests`` round-robin to ``base_url`` at ``rate`` per second while the ``with``
    block runs (a ``Repeat``: one request a step, in a daemon thread); ``tally`` says what was
    sent.

    Example:
        with ProbeTraffic("http://127.0.0.1:8001", smoke, rate=5.0) as probe:
            result = observe_stage(...)
        probe.tally.sent
    """

    def __init__(
        self,
        base_url: str,
        requests: Sequence[SmokeRequest],
        *,
        rate: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if not requests:
            raise ValueError("probe traffic needs at least one smoke request to send")
        super().__init__(1.0 / rate, self._send_one, name="deployflow-probe", join_timeout=10.0)
        self.base_url = base_url.rstrip("/")
        self._next = itertools.cycle(list(requests))
        self._client = httpx.Client(timeout=5.0, transport=transport)
        self._sent = self._failed = self._unanswered = 0

    @property
    def tally(self) -> ProbeTally:
        return ProbeTally(self._sent, self._failed, self._unanswered)

    def _send_one(self) -> None:
        smoke = next(self._next)
        self._sent += 1
        try:
            response = self._client.request(
                smoke.method, self.base_url + smoke.path, timeout=smoke.timeout
            )
        except httpx.HTTPError:
            self._unanswered += 1
            return
        if response.status_code != smoke.expect_status:
            self._failed += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, tb)
        self._client.close()
