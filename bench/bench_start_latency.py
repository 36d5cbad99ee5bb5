"""Benchmark: how long a triggered deploy takes to reach its first task on a worker, and the import
time a worker pays for each run.

Run with ``uv run python bench/bench_start_latency.py [RUNS] [--before REF] [--busy N]
[--modes 0,1,2] [--query-seconds S]``. A cold run's process imports Prefect and flows/deploy.py;
that import is measured alone with ``python -X importtime -c 'import flows.deploy'`` (best of
three), listing the heavy modules it pulls in. Then RUNS deploys (bench/fake_deploy.py: the real
steps on in-memory backends) are triggered one after another on a Prefect server on PostgreSQL
with one process worker, and each run's timeline is read back from the API: trigger to claimed by
the worker, to Running (process start, imports, flow loaded), to the first task's start.

Each set is measured for three ways of starting a run's process (``--modes``): 0, Prefect's
default (no job command: Prefect 3.9's workspace supervisor, which imports Prefect, then
``python -m prefect.engine`` in its place); 1, the job command ``python -m prefect.engine`` (what
the warm launcher falls back to); 2, the warm start (deployments/warm_start.py, as prefect.yaml
sets it; one untimed run first starts the zygote, as a worker's first run does).

The runs are measured twice: as the machine is, then with N processes (``--busy``, default 1)
spinning a CPU busy loop beside the server and the worker, as a shared worker machine would be.
Each set prints the load average it was taken at: quote a figure with its load.

``--before REF`` measures the same on the code of a git ref (exported with ``git archive`` to a
temporary directory; bench/fake_deploy.py is copied in), so the effect of a change prints beside.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from team_server import ENTRYPOINT, REPO_ROOT, TeamServer, team_server

from deployflow.polling import wait_for
from tests.e2e.team_conftest_helpers import POOL, final_states

HEAVY = ("alembic", "mako", "sqlalchemy", "pglast", "slack_sdk", "prometheus_api_client")


def import_profile(checkout: Path) -> tuple[float, dict[str, float]]:
    """Seconds to import flows.deploy (best of three) and the heavy modules' cumulative seconds;
    ``cpu`` in the dict is the importing process's CPU time (user + system), which a loaded
    machine inflates less than the wall-clock figures of ``-X importtime``."""
    best: tuple[float, dict[str, float]] | None = None
    for _ in range(3):
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import flows.deploy"],
            cwd=checkout,
            capture_output=True,
            text=True,
            check=True,
        )
        cumulative: dict[str, float] = {}
        for line in result.stderr.splitlines():
            if not line.startswith("import time:") or "cumulative" in line:
                continue
            _, cum, name = line.split("|")
            module = name.strip()
            if module in HEAVY or module == "flows.deploy":
                cumulative[module] = max(cumulative.get(module, 0.0), int(cum) / 1e6)
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cumulative["cpu"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (
            cpu_after.ru_stime - cpu_before.ru_stime
        )
        total = cumulative.pop("flows.deploy")
        if best is None or total < best[0]:
            best = (total, cumulative)
    assert best is not None
    return best


def export(ref: str, into: Path) -> Path:
    """The tree of ``ref`` in ``into``, with this bench's flow file copied in."""
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "bench").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "bench" / "fake_deploy.py", into / "bench" / "fake_deploy.py")
    return into


def warm_command(checkout: Path) -> str:
    """The warm launcher as prefect.yaml sets it, preloading the bench's flow file."""
    launcher = checkout / "deployments" / "warm_start.py"
    return f"{sys.executable} -I -S {launcher} --preload bench/fake_deploy.py"


# How a run's process is started: Prefect's default (no command: a workspace supervisor process
# that imports Prefect, then `python -m prefect.engine` in its place), the engine command itself
# (what the warm launcher falls back to), and the warm launcher (deployments/warm_start.py).
MODES = {
    "cold, Prefect's default command": lambda checkout: None,
    "cold, python -m prefect.engine": lambda checkout: f"{sys.executable} -m prefect.engine",
    "warm (deployments/warm_start.py)": warm_command,
}


def deployment_in(ts: TeamServer, checkout: Path, name: str, command: str | None = None) -> UUID:
    """A deployment of the bench flow whose runs start in ``checkout`` with ``command`` (None:
    the pool's default)."""
    flow_id = ts.client.create_flow_from_name("deploy-on-fakes")
    return ts.client.create_deployment(
        flow_id,
        name,
        entrypoint=ENTRYPOINT,
        work_pool_name=POOL,
        path=str(checkout),
        pull_steps=[
            {"prefect.deployments.steps.set_working_directory": {"directory": str(checkout)}}
        ],
        enforce_parameter_schema=False,
        job_variables={"command": command} if command else {},
    )


def latencies(ts: TeamServer, deployment_id: UUID, runs: int, tag: str) -> list[dict[str, float]]:
    """Trigger ``runs`` deploys one after another; each one's phases in seconds."""
    phases = []
    for i in range(runs):
        run = ts.client.create_flow_run_from_deployment(
            deployment_id, parameters={"service": f"{tag}{i}", "version": "v2"}
        )
        wait_for(
            lambda run_id=run.id: final_states(ts.client, [run_id], ts.workers),
            timeout=600,
            interval=0.5,
            what="the run to finish",
        )
        states = sorted(ts.client.read_flow_run_states(run.id), key=lambda s: s.timestamp)
        first = {}
        for state in states:
            first.setdefault(state.type.value, state.timestamp)

        def started_tasks(run_id: UUID = run.id) -> list[datetime] | None:
            # Task runs reach the server through events, which may land after the flow's final
            # state: poll until they have.
            tasks = ts.client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id]))
            )
            return [t.start_time for t in tasks if t.start_time is not None] or None

        first_task = min(
            wait_for(started_tasks, timeout=60, interval=0.5, what="the run's task runs")
        )
        trigger = run.created or first["SCHEDULED"]
        phases.append({
            "claimed": (first["PENDING"] - trigger).total_seconds(),
            "running": (first["RUNNING"] - first["PENDING"]).total_seconds(),
            "first task": (first_task - first["RUNNING"]).total_seconds(),
            "trigger to first task": (first_task - trigger).total_seconds(),
        })  # fmt: skip
    return phases


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU for as long as the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def show_imports(label: str, profile: tuple[float, dict[str, float]]) -> None:
    wall, modules = profile[0], dict(profile[1])
    cpu = modules.pop("cpu")
    parts = ", ".join(f"{m} {s:.2f}" for m, s in sorted(modules.items(), key=lambda kv: -kv[1]))
    print(f"  {label}: import flows.deploy {wall:.2f} s wall, {cpu:.2f} s CPU; "
          f"heavy modules (s, wall): {parts or 'none'}")  # fmt: skip


def show_latency(label: str, phases: list[dict[str, float]]) -> None:
    print(f"  {label} ({len(phases)} runs, median / max in s):")
    for phase in phases[0]:
        values = [p[phase] for p in phases]
        print(f"    {phase:<22} {statistics.median(values):6.1f} / {max(values):6.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", type=int, default=3)
    parser.add_argument("--before", metavar="REF", help="also measure the code of this git ref")
    parser.add_argument(
        "--busy", type=int, default=1, metavar="N", help="busy-loop processes for the second set"
    )
    parser.add_argument(
        "--modes",
        default=",".join(str(n) for n in range(len(MODES))),
        help="which ways of starting a run to measure, by number: "
        + "; ".join(f"{n} {label}" for n, label in enumerate(MODES)),
    )
    parser.add_argument(
        "--query-seconds",
        type=float,
        default=1,
        metavar="S",
        help="the worker's PREFECT_WORKER_QUERY_SECONDS (default 1)",
    )
    args = parser.parse_args()
    chosen = {label for n, label in enumerate(MODES) if str(n) in args.modes.split(",")}

    with tempfile.TemporaryDirectory(prefix="deployflow-before-") as tmp:
        checkouts = {"now": REPO_ROOT}
        if args.before:
            checkouts[f"before ({args.before})"] = export(args.before, Path(tmp))
        print(f"worker import time (python -X importtime, best of 3; {load()}):")
        for label, checkout in checkouts.items():
            show_imports(label, import_profile(checkout))

        started = time.monotonic()
        with team_server(workers=1, limit=1, query_seconds=args.query_seconds) as ts:
            print(f"start latency on a team server (set-up {time.monotonic() - started:.0f} s; "
                  f"worker polls every {args.query_seconds:g} s):")  # fmt: skip
            deployments = {
                f"{label}, {mode}": deployment_in(ts, checkout, f"latency-{n}-{m}", make(checkout))
                for n, (label, checkout) in enumerate(checkouts.items())
                for m, (mode, make) in enumerate(MODES.items())
                if mode in chosen and (label == "now" or m == 0)
            }
            if any(m.startswith("warm") for m in chosen):
                # The first warm run also starts the zygote (as a worker's first run does): not
                # what the figures are about.
                warm = [d for label, d in deployments.items() if "warm" in label]
                latencies(ts, warm[0], 1, "warmup-")
            for n, (label, deployment_id) in enumerate(deployments.items()):
                phases = latencies(ts, deployment_id, args.runs, f"svc{n}-")
                show_latency(f"{label}, as the machine is, {load()} at the end", phases)
            with busy_loops(args.busy):
                for n, (label, deployment_id) in enumerate(deployments.items()):
                    phases = latencies(ts, deployment_id, args.runs, f"busy{n}-")
                    show_latency(
                        f"{label}, {args.busy} CPU busy loop(s) beside, {load()} at the end",
                        phases,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
