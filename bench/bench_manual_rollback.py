"""Benchmark a person's rollback on the sandbox: from ``deployflow rollback`` being typed to the
frontend serving only the version returned to, with that version still running (warm: kept by
``keep_previous``) and stopped (cold: started again first).

Run with ``uv run python bench/bench_manual_rollback.py [ROUNDS]`` (default 3 each). The sandbox
(HAProxy, Prometheus, the demo app at its usual traffic) and a Prefect server start first; v2 is
released over v1 (direct). Each round then rolls back with the CLI in a subprocess (a fresh Python,
as a person's terminal), alternating the version returned to; before it, that version is started
(warm) or stopped (cold). A client polls the frontend every 20 ms. A first untimed
round compiles a fresh checkout's bytecode. Printed per case: the command's
wall time to traffic restored (the first answer from the version returned to after which no other
version answered), the router call alone (``restore_seconds`` from the JSON), the command's whole
run, and failed requests. Goal: under 10 s to traffic restored when warm. Wall-clock figures:
take them on a quiet machine (``uptime`` is printed beside them).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]
SPEC = ROOT / "examples" / "sandbox.yaml"


class Watch:
    """Polls the frontend; remembers when each version answered and what failed."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.answers: list[tuple[float, str]] = []
        self.failed = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.stop.is_set():
                try:
                    response = client.get(self.url)
                    if response.is_success:
                        self.answers.append((time.monotonic(), response.json()["version"]))
                    else:
                        self.failed += 1
                except (httpx.HTTPError, ValueError):
                    self.failed += 1
                time.sleep(0.02)

    def restored_at(self, version: str, since: float) -> float | None:
        """The first answer from ``version`` after ``since`` that no other version followed."""
        at = None
        for t, v in self.answers:
            if t < since:
                continue
            if v != version:
                at = None
            elif at is None:
                at = t
        return at


def main(rounds: int) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from deployflow.polling import wait_for
    from deployflow.sandbox.supervisor import Sandbox
    from deployflow.spec import load_spec
    from flows.deploy import deploy
    from tests.backends import build_metrics, build_target

    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=240):
        from prefect.settings import PREFECT_API_URL

        state = Path(tmp)
        os.environ["DEPLOYFLOW_DATA_DIR"] = str(state / "data")
        os.environ["DEPLOYFLOW_OBSERVE"] = "4s"
        os.environ["DEPLOYFLOW_MAX_STAGE"] = "12s"
        os.environ.pop("DEPLOYFLOW_DATABASE_URL", None)
        with Sandbox(state / "sandbox") as sandbox:
            os.environ.update(sandbox.env_vars())
            sandbox.wait_for_metrics("v1", timeout=60)
            spec = load_spec(SPEC)
            metrics = build_metrics(spec)
            wait_for(
                lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
                timeout=60, interval=0.5, what="a P95 baseline for v1",
            )  # fmt: skip
            result = deploy(
                environment="sandbox", spec_path=str(SPEC), version="v2", strategy="direct"
            )
            assert result["status"] == "succeeded", result
            target = build_target(load_spec(SPEC))
            env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
            watch = Watch(sandbox.frontend_url + "/api/items")
            watch.thread.start()
            figures: dict[str, list[tuple[float, float, float]]] = {"warm": [], "cold": []}
            live, other = "v2", "v1"
            # One untimed round first: the first run of a fresh checkout compiles its bytecode.
            for case in ("warmup", "warm", "cold"):
                for _ in range(1 if case == "warmup" else rounds):
                    if case != "cold":
                        target.start(other)
                    else:
                        target.stop(other)
                    failed_before = watch.failed
                    started = time.monotonic()
                    proc = subprocess.run(
                        [sys.executable, "-m", "deployments.cli", "rollback", "demo",
                         "--spec", str(SPEC), "--environment", "sandbox", "--to", other,
                         "--reason", "bench", "--json"],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                    )  # fmt: skip
                    whole = time.monotonic() - started
                    out = json.loads(proc.stdout.strip().splitlines()[-1])
                    assert proc.returncode == 0, proc.stdout + proc.stderr
                    at = wait_for(
                        lambda v=other, t=started: watch.restored_at(v, t), timeout=10,
                        what="an answer from the version returned to",
                    )  # fmt: skip
                    if case != "warmup":
                        figures[case].append((at - started, out["restore_seconds"], whole))
                    print(
                        f"{case}: {live} -> {other}: traffic restored {at - started:.2f} s after "
                        f"the command (router call {out['restore_seconds'] * 1000:.0f} ms, "
                        f"command {whole:.2f} s), {watch.failed - failed_before} failed requests",
                        flush=True,
                    )
                    live, other = other, live
            watch.stop.set()
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} CPUs)")
    for case, rows in figures.items():
        restored = [r[0] for r in rows]
        print(
            f"{case}: command to traffic restored median {statistics.median(restored):.2f} s "
            f"(max {max(restored):.2f} s) over {len(rows)}; router call median "
            f"{statistics.median(r[1] for r in rows) * 1000:.0f} ms; whole command median "
            f"{statistics.median(r[2] for r in rows):.2f} s; goal (warm) under 10 s"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
