"""How many bad answers users get from a version that answers 500 to everything, with the
data-plane guard (the router takes the canary out by itself), and how fast.

Run with ``uv run python bench/bench_data_plane_guard.py [RUNS] [--rps 60 600]``. For each traffic
level it brings up the sandbox's real HAProxy (its configuration, guard included), a healthy v1
and two versions whose every ``/api/items`` answer is a 500 (their health endpoint is fine, so
only the guard can take them out), then RUNS times: puts a broken version in the canary slot at
5% (the first canary step), sends ``rps`` requests/s through the frontend from a pool of clients
at a steady pace, and records every answer (when it was sent, which version answered, its
status) while a watcher reads the router's state every 5 ms. Printed per run and as medians: the
bad answers users got, the time from the first bad answer to the router showing the canary out
of rotation (0% on it), and to the last bad answer. No judge, Prometheus or Prefect takes part:
this is the router alone, which the judge then sees at its next look.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from deployflow.polling import wait_for
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.sandbox.haproxy import LocalHAProxy
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND

BROKEN = {"x1": {"error_rate": 1.0}, "x2": {"error_rate": 1.0}}


def one_run(haproxy: LocalHAProxy, v1, broken, rps: float, seconds: float) -> dict[str, float]:
    router = haproxy.router()
    router.set_split(v1, None, 0)
    answers: list[tuple[float, str, int]] = []
    out_at: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if router.state().canary is None and router.state().canary_weight == 0:
                out_at.append(time.monotonic())
                return
            stop.wait(0.005)

    def send(client: httpx.Client, at: float) -> None:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronisation
        sent = time.monotonic()
        try:
            response = client.get("/api/items")
            version = str(response.json().get("version", "?"))
            answers.append((sent, version, response.status_code))
        except (httpx.HTTPError, ValueError):
            answers.append((sent, "?", 0))

    router.set_split(v1, broken, 5)
    wait_for(lambda: router.state().canary == broken.address or None, timeout=5, interval=0.01,
             what="the broken canary in rotation")  # fmt: skip
    watcher = threading.Thread(target=watch, daemon=True)
    started = time.monotonic()
    watcher.start()
    count = int(rps * seconds)
    with (
        httpx.Client(base_url=haproxy.frontend_url, timeout=5.0) as client,
        ThreadPoolExecutor(max(4, int(rps // 20))) as pool,
    ):
        list(pool.map(lambda i: send(client, started + i / rps), range(count)))
    stop.set()
    watcher.join(timeout=5)
    bad = sorted(sent for sent, version, status in answers if version == broken.version)
    first = bad[0] if bad else None
    return {
        "bad": len(bad),
        "to_out": (out_at[0] - first) if (out_at and first is not None) else float("nan"),
        "to_last": (bad[-1] - first) if bad else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=10)
    parser.add_argument("--rps", type=float, nargs="+", default=[60.0, 600.0])
    parser.add_argument("--seconds", type=float, default=6.0, help="traffic per run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deployflow-guard-") as tmp:
        target = LocalProcessTarget(
            DEMO_APP_COMMAND,
            state_dir=Path(tmp) / "apps",
            env={"DEPLOYFLOW_DEMO_FAULTS": json.dumps(BROKEN)},
        )
        try:
            v1 = target.start("v1")
            broken = [target.start("x1"), target.start("x2")]
            with LocalHAProxy(Path(tmp) / "haproxy") as haproxy:
                for rps in args.rps:
                    print(f"\n{rps:g} requests/s through HAProxy, canary at 5% "
                          f"({rps * 0.05:g}/s), {args.runs} runs:")  # fmt: skip
                    rows = []
                    for run in range(args.runs):
                        row = one_run(haproxy, v1, broken[run % 2], rps, args.seconds)
                        rows.append(row)
                        print(
                            f"  run {run + 1}: {row['bad']:.0f} bad answers; out of rotation "
                            f"{row['to_out']:.2f} s after the first, last bad answer at "
                            f"{row['to_last']:.2f} s"
                        )
                    print(
                        f"  median: {statistics.median(r['bad'] for r in rows):.0f} bad answers "
                        f"(max {max(r['bad'] for r in rows):.0f}); first bad answer to 0% on the "
                        f"canary {statistics.median(r['to_out'] for r in rows):.2f} s (max "
                        f"{max(r['to_out'] for r in rows):.2f} s)"
                    )
        finally:
            target.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
