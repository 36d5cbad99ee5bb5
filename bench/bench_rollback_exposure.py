"""Requests a bad version serves after its rollback trigger, on the real sandbox.

Run with ``uv run python bench/bench_rollback_exposure.py [RUNS]`` (default 5; ``make bench`` runs
it). It brings up the sandbox (HAProxy, Prometheus, v1 with 60 requests/s of traffic) and a
temporary Prefect server, then deploys v3 (20% of its requests fail) RUNS times through the deploy
flow; each one rolls back at the first stage. Beside the sandbox's own traffic a probe sends 50
requests/s through the frontend and records, for every answer, when the request was sent and which
version answered (the demo service names itself in every body, errors included).

Per run it prints: when the deciding measurement was taken (the trigger: the failing stage's end),
how many probe requests sent after it were answered by v3, and how long after the trigger the last
of them was sent. Figures are the probe's share; scale by (60 + 50) / 50 for all the traffic.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "examples" / "sandbox.yaml"
PROBE_RPS = 50.0
FAULTS = {"v3": {"error_rate": 0.2}}


class Probe:
    """Send ``PROBE_RPS`` requests/s; remember (sent at, answering version) for each answer."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        period = 1.0 / PROBE_RPS
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            next_send = time.time()
            while not self._stop.wait(max(0.0, next_send - time.time())):
                sent = time.time()
                next_send = max(next_send + period, sent)
                try:
                    version = client.get("/api/items").json().get("version")
                except (httpx.HTTPError, ValueError):
                    continue
                if version:
                    self.answers.append((sent, str(version)))

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def main(runs: int) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    from deployflow.polling import wait_for
    from deployflow.providers import registry
    from deployflow.providers.base import BuildContext
    from deployflow.sandbox.supervisor import Sandbox
    from deployflow.spec import load_spec
    from deployments.run import run_deploy

    rows: list[tuple[int, float]] = []
    with (
        tempfile.TemporaryDirectory(prefix="deployflow-bench-") as tmp,
        prefect_test_harness(server_startup_timeout=120),
        Sandbox(
            Path(tmp) / "sandbox", env={"DEPLOYFLOW_DEMO_FAULTS": json.dumps(FAULTS)}, rps=60
        ) as sb,
    ):
        os.environ.update(sb.env_vars())
        os.environ["DEPLOYFLOW_DEMO_FAULTS"] = json.dumps(FAULTS)
        os.environ["DEPLOYFLOW_DATA_DIR"] = str(Path(tmp) / "data")
        os.environ.setdefault("DEPLOYFLOW_OBSERVE", "20s")
        spec = load_spec(SPEC)
        metrics = registry.build("metrics", spec.metrics, BuildContext())
        sb.wait_for_metrics("v1", timeout=60)
        wait_for(
            lambda: metrics.p95("v1", spec.analysis.baseline_window).value,
            timeout=60,
            interval=0.5,
            what="a P95 baseline for v1",
        )
        with Probe(sb.frontend_url) as probe:
            for run in range(1, runs + 1):
                outcome = run_deploy(str(SPEC), "v3", "bench", "canary", False)
                if outcome["status"] != "rolled_back" or not outcome["stages"]:
                    print(f"run {run}: {outcome['status']}: {outcome.get('message')}")
                    return 1
                trigger = datetime.fromisoformat(outcome["stages"][-1]["finished_at"])
                at = trigger.timestamp()
                late = [sent for sent, version in list(probe.answers) if version == "v3"]
                after = [sent for sent in late if sent > at]
                window = (max(after) - at) if after else 0.0
                rows.append((len(after), window))
                print(
                    f"run {run}: trigger {outcome['rollback']['metric']} at stage "
                    f"{outcome['rollback']['stage'] + 1}; probe requests answered by v3 after it: "
                    f"{len(after)} (last sent {window * 1000:.0f} ms after the trigger)"
                )
                probe.answers.clear()
    counts = [c for c, _ in rows]
    windows = [w for _, w in rows]
    print(
        f"\n{runs} rollbacks: requests answered by the bad version after the trigger "
        f"(probe, {PROBE_RPS:.0f} req/s): median {statistics.median(counts):.0f}, "
        f"max {max(counts)}; trigger to last bad answer: median "
        f"{statistics.median(windows) * 1000:.0f} ms, max {max(windows) * 1000:.0f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
