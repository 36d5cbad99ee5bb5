"""Benchmark the blue-green switch on the sandbox's real HAProxy (or nginx) under steady traffic.

Run with ``uv run python bench/bench_bluegreen.py [ROUNDS] [haproxy|nginx]``. Two demo-app versions
run beside each other; traffic goes through the router without pause from two client threads.
HAProxy switches through its runtime API; nginx through its upstream file, one ``nginx -t`` and one
reload per switch (the router waits until nginx serves the new file). Each round
switches all traffic to green the way the blue-green subflow does (``set_split(blue, green,
100)``, confirmed by reading the router back), then switches back the way the rollback does
(``set_split(blue, None, 0)``). Printed: switch and switch-back times (from the decision to the
router confirming the new state) and the requests that failed (a non-2xx answer or no answer)
over the whole run. Goal: 0 failed requests.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from deployflow.providers.base import Instance, Router
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.nginx import LocalNginx
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND

CLIENTS = 2
SETTLE_SECONDS = 0.5  # traffic on each colour between switches, so every switch meets traffic


class Traffic:
    """Requests through the frontend without pause until stopped; counts answers by version."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                try:
                    response = client.get(self.url)
                    ok = response.is_success
                    what = response.json().get("version", "?") if ok else str(response.status_code)
                except (httpx.HTTPError, ValueError) as exc:
                    ok, what = False, type(exc).__name__
                with self.lock:
                    if ok:
                        self.served[what] += 1
                    else:
                        self.failures.append(what)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)


def timed(router: Router, blue: Instance, green: Instance | None, weight: int) -> float:
    started = time.perf_counter()
    router.set_split(blue, green, weight)
    state = router.state()
    seconds = time.perf_counter() - started
    expected = green.address if green is not None and weight else None
    if state.canary != expected or state.canary_weight != weight:
        raise RuntimeError(f"the router did not take the change: {state}")
    return seconds


def settle() -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:  # traffic keeps flowing meanwhile; this is pacing
        time.sleep(0.05)


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    kind = sys.argv[2] if len(sys.argv) > 2 else "haproxy"
    if kind not in ("haproxy", "nginx"):
        print(f"router must be 'haproxy' or 'nginx', got {kind!r}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-bluegreen-") as tmp:
        target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=Path(tmp) / "apps")
        try:
            blue, green = target.start("blue"), target.start("green")
            proxy_dir = Path(tmp) / kind
            proxy = LocalNginx(proxy_dir) if kind == "nginx" else LocalHAProxy(proxy_dir)
            with proxy:
                router = proxy.router()
                router.promote(blue)
                switches, backs = [], []
                with Traffic(proxy.frontend_url + "/api/checkout") as traffic:
                    settle()
                    for _ in range(rounds):
                        switches.append(timed(router, blue, green, 100))
                        settle()
                        backs.append(timed(router, blue, None, 0))
                        settle()
        finally:
            target.stop_all()
    ms = [s * 1000 for s in switches]
    back_ms = [s * 1000 for s in backs]
    total = sum(traffic.served.values()) + len(traffic.failures)
    print(f"{kind}: {rounds} switches to green and {rounds} switches back, {CLIENTS} clients")
    print(f"switch to green:  median {statistics.median(ms):.1f} ms, max {max(ms):.1f} ms")
    print(
        f"switch back:      median {statistics.median(back_ms):.1f} ms, max {max(back_ms):.1f} ms"
    )
    print(f"requests: {total}, served by {dict(traffic.served)}")
    print(f"failed requests: {len(traffic.failures)} {Counter(traffic.failures) or ''} (goal: 0)")
    return 0 if not traffic.failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
