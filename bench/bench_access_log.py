"""Benchmark the access-log metrics backend: how fast it parses, and how soon a request counts.

Run with ``uv run python bench/bench_access_log.py [LINES] [--routers]``.

1. Parse rate, in CPU time (``time.process_time``, so a shared machine's load does not skew
   it): LINES synthetic lines (default 400,000) in each router's deployflow format (HAProxy's
   behind an rsyslog prefix; nginx's with one request in a hundred retried on a second server),
   three server addresses, twenty endpoints, latencies from 1 ms to 2 s, spread over ten
   minutes, appended to a log the backend already follows, then read by one look
   (``sample``). Printed: requests parsed per CPU-second (one core), CPU milliseconds per 1,000
   requests, and the CPU time of a look over a 60 s window once they are in memory.
2. With ``--routers`` (start real servers: run it through /work/slot on a shared machine): the
   time from a request answered through a real HAProxy (logging to its standard output) and a
   real nginx (its access_log) to its counting in the backend's figures, over 20 requests one
   at a time. The backend reads at each look, so this is the router's own delay in writing
   the line plus one look.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deployflow.polling import wait_for
from deployflow.providers.access_log import AccessLogMetrics
from deployflow.providers.base import Instance
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.slots import RecordingRouter, SlotHistory
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx

ADDRESSES = ("10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080")
ENDPOINTS = tuple(f"/api/v1/resource{i}?page={i}" for i in range(20))
SPAN_SECONDS = 600.0
PLAIN_APP = (
    "{python}", "-m", "deployflow.sandbox.plain_app",
    "--version", "{version}", "--port", "{port}", "--host", "{host}",
)  # fmt: skip


def synthetic_lines(router: str, count: int, end: float) -> list[str]:
    rng = random.Random(7)
    lines = []
    for i in range(count):
        at = end - SPAN_SECONDS + SPAN_SECONDS * i / count
        address = ADDRESSES[i % 3]
        status = "500" if rng.random() < 0.01 else "200"
        uri = ENDPOINTS[i % len(ENDPOINTS)]
        ms = max(1, int(rng.lognormvariate(3.0, 0.8)))
        if router == "haproxy":
            lines.append(
                f"Dec  6 08:00:00 lb haproxy[4242]: deployflow|{at:.3f}|{address}|{status}|{ms}|"
                f"{uri}\n"
            )
        elif i % 100 == 0:  # a retry: the first server refused, the second answered
            lines.append(
                f"deployflow|{at:.3f}|{ADDRESSES[0]}, {address}|502, {status}|0.001, "
                f"{ms / 1000:.3f}|{uri}\n"
            )
        else:
            lines.append(f"deployflow|{at:.3f}|{address}|{status}|{ms / 1000:.3f}|{uri}\n")
    return lines


def parse_rate(router: str, count: int) -> None:
    now = time.time()
    history = SlotHistory(None)
    history.record_slots(
        0.0,
        [(f"s{i}", Instance(f"v{i}", *a.split(":"))) for i, a in enumerate(ADDRESSES)],  # type: ignore[arg-type]
    )
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "access.log"
        log.write_text("")
        metrics = AccessLogMetrics(log, router, history)  # type: ignore[arg-type]
        metrics.sample("v0", 60)  # follows the log from its (empty) end
        lines = synthetic_lines(router, count, now)
        log.write_text("".join(lines))
        size = log.stat().st_size
        cpu = time.process_time()
        sample = metrics.sample("v0", SPAN_SECONDS + 60)
        spent = time.process_time() - cpu
        requests = metrics.parser.parsed + count // 100 * (router == "nginx")
        cpu = time.process_time()
        looks = 20
        for _ in range(looks):
            metrics.sample("v1", 60)
        look = (time.process_time() - cpu) / looks
    assert sample.requests is not None
    print(
        f"{router:7} {count:,} lines ({size / 1e6:.1f} MB), {requests:,} requests: "
        f"{requests / spent:,.0f} requests/s per core, {spent / requests * 1e6:.2f} ms CPU per "
        f"1,000 requests; a look over 60 s once in memory: {look * 1000:.1f} ms CPU"
    )


def request_to_figures(proxy: LocalHAProxy | LocalNginx, kind: str, target: LocalProcessTarget):
    v1 = target.start("v1")
    history = SlotHistory(None)
    RecordingRouter(proxy.router(), history, target).set_split(v1, None, 0)
    metrics = AccessLogMetrics(proxy.access_log, kind, history)  # type: ignore[arg-type]
    metrics.sample("v1", 60)
    delays = []
    with httpx.Client(timeout=5) as client:
        for _ in range(20):
            before = metrics.sample("v1", 60).requests or 0
            client.get(f"{proxy.frontend_url}/api/items").raise_for_status()
            answered = time.perf_counter()
            wait_for(
                lambda b=before: (metrics.sample("v1", 60).requests or 0) > b,
                timeout=10,
                interval=0.001,
                what="the request in the figures",
            )
            delays.append(time.perf_counter() - answered)
    median = statistics.median(delays) * 1000
    print(
        f"{kind:7} request answered -> in the figures: median {median:.1f} ms, max "
        f"{max(delays) * 1000:.1f} ms over {len(delays)} requests"
    )


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count = int(args[0]) if args else 400_000
    for router in ("haproxy", "nginx"):
        parse_rate(router, count)
    if "--routers" not in sys.argv:
        return
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder)
        target = LocalProcessTarget(PLAIN_APP, state_dir=state / "apps")
        try:
            with LocalHAProxy(state / "haproxy", access_log=True) as haproxy:
                request_to_figures(haproxy, "haproxy", target)
            with LocalNginx(state / "nginx") as nginx:
                request_to_figures(nginx, "nginx", target)
        finally:
            target.stop_all()


if __name__ == "__main__":
    main()
