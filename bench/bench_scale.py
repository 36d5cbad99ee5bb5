"""Benchmark: 200 deploys of 200 services at once on a team server with 4 workers.

Run with ``uv run python bench/bench_scale.py [DEPLOYS] [WORKERS] [LIMIT]`` (defaults 200, 4, 10).
A Prefect server on PostgreSQL, the tracking database on the same PostgreSQL, and WORKERS process
workers (each running up to LIMIT flow runs at once) on this machine; DEPLOYS flow runs of
``bench/fake_deploy.py`` (the deploy flow's real steps, tasks, subflows and tracking writes on
in-memory backends), one per service, created at the same instant.

Checked: every run ends Completed with its tracking row ``succeeded`` (no deploy refused or held
by another service's: the one-active-deploy guard is per service and environment), and runs of
different services overlapped. Printed: wall time from the trigger to the last run's end (deploys
per minute), the time runs waited for a worker and ran (the slowest run), how many ran at once, the
server's rate (flow and task runs and state transitions it recorded per second) and the CPU the
Prefect server's processes used (seconds, and per second of wall time: the cores it kept busy),
with the load average it was taken at.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from team_server import TeamServer, team_server

from deployflow.polling import wait_for
from tests.e2e.team_conftest_helpers import child_pids, final_states, tracked_by_flow_run


def timeline(ts: TeamServer, run_id: UUID) -> dict[str, datetime]:
    """When the run entered each state type (first time)."""
    seen: dict[str, datetime] = {}
    for state in sorted(ts.client.read_flow_run_states(run_id), key=lambda s: s.timestamp):
        seen.setdefault(state.type.value, state.timestamp)
    return seen


def max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def server_counts(ts: TeamServer) -> dict[str, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(ts.server.database_url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in ("flow_run", "task_run", "flow_run_state", "task_run_state", "log")
            }
    finally:
        engine.dispose()


def group_cpu_seconds(group: int) -> float:
    """User + system CPU seconds of the live processes in process group ``group`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        # After the name: state, ppid, pgrp, ... utime is field 14 and stime 15 of the whole line.
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def with_children_cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and of the children it waited for (a worker's finished
    flow runs: each runs in a session of its own, so not in the worker's group)."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14 to 17 of the whole line.
    return sum(int(f) for f in fields[11:15]) / tick


def create_runs(ts: TeamServer, deploys: int) -> list[UUID]:
    """The flow runs, created 16 at a time: one after another, on a machine busy running the
    first ones, creating 200 took 670 s (3.3 s a call; 0.04 s on an idle server), which was then
    most of the wall time the bench reported."""

    async def create_all() -> list[UUID]:
        gate = asyncio.Semaphore(16)
        async with get_client() as client:

            async def one(i: int) -> UUID:
                async with gate:
                    run = await client.create_flow_run_from_deployment(
                        ts.deployment_id, parameters={"service": f"svc{i:03d}", "version": "v2"}
                    )
                    return run.id

            return list(await asyncio.gather(*(one(i) for i in range(deploys))))

    with temporary_settings(updates={PREFECT_API_URL: ts.server.api_url}):
        return asyncio.run(create_all())


def seconds(values: list[float]) -> str:
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s"


def main(deploys: int, workers: int, limit: int) -> int:
    started = time.monotonic()
    with team_server(workers, limit) as ts:
        print(f"set-up (PostgreSQL, Prefect server, {workers} workers): "
              f"{time.monotonic() - started:.0f} s")  # fmt: skip
        before = server_counts(ts)
        server_cpu = group_cpu_seconds(ts.server.process.pid)
        worker_pids = [p.pid for p in ts.workers.processes.values()]
        workers_cpu = sum(with_children_cpu_seconds(pid) for pid in worker_pids)
        t0 = time.monotonic()
        run_ids = create_runs(ts, deploys)
        created = time.monotonic() - t0
        runs: dict[UUID, Any] = wait_for(
            lambda: final_states(ts.client, run_ids, ts.workers),
            timeout=3600,
            interval=2,
            what=f"{deploys} deploys to finish",
        )
        wall = time.monotonic() - t0
        server_cpu = group_cpu_seconds(ts.server.process.pid) - server_cpu
        # A run's process outlives its final state by a second or two (Prefect's teardown): its
        # CPU reaches the worker's account once the worker has reaped it.
        wait_for(
            lambda: not any(child_pids(pid) for pid in worker_pids),
            timeout=120,
            interval=0.5,
            what="the flow run processes to exit",
        )
        workers_cpu = sum(with_children_cpu_seconds(pid) for pid in worker_pids) - workers_cpu
        load = os.getloadavg()
        after = server_counts(ts)

        failures = []
        for run_id, run in runs.items():
            if run.state.type.value != "COMPLETED" or run.state.name != "Completed":
                failures.append(f"{run.name}: {run.state.name}: {run.state.message}")
                continue
            row = tracked_by_flow_run(ts.tracking_url, run_id)
            if row["status"] != "succeeded":
                failures.append(f"{run.name}: tracked {row['status']}: {row.get('message')}")
        times = {run_id: timeline(ts, run_id) for run_id in run_ids}
        started_runs = [t for t in times.values() if "RUNNING" in t]
        waited = [(t["RUNNING"] - t["SCHEDULED"]).total_seconds() for t in started_runs]
        ran = [(t["COMPLETED"] - t["RUNNING"]).total_seconds() for t in started_runs
               if "COMPLETED" in t]  # fmt: skip
        spans = [(t["RUNNING"], t.get("COMPLETED") or t["RUNNING"]) for t in started_runs]
        overlap = max_overlap(spans)
        if overlap < 2:
            failures.append("the deploys never ran at the same time")

    delta = {k: after[k] - before[k] for k in after}
    transitions = delta["flow_run_state"] + delta["task_run_state"]
    print(f"{deploys} deploys of {deploys} services, {workers} process workers (limit {limit})")
    print(f"  trigger: {deploys} flow runs created through the API in {created:.1f} s "
          "(16 requests at a time)")  # fmt: skip
    print(f"  wall time, trigger to the last run's end: {wall:.0f} s "
          f"({deploys / wall * 60:.1f} deploys/minute)")  # fmt: skip
    print(f"  waited for a worker (Scheduled to Running): {seconds(waited)}")
    print(f"  ran (Running to Completed): {seconds(ran)}; the slowest run took {max(ran):.1f} s")
    print(f"  runs at once, at most: {overlap} (worker capacity {workers * limit})")
    print(f"  server recorded: {delta['flow_run']} flow runs (with subflows), "
          f"{delta['task_run']} task runs, {transitions} state transitions, "
          f"{delta['log']} log lines")  # fmt: skip
    print(f"  server rate: {transitions / wall:.1f} state transitions/s, "
          f"{(delta['flow_run'] + delta['task_run']) / wall:.1f} runs/s")  # fmt: skip
    print(f"  Prefect server CPU: {server_cpu:.0f} s over {wall:.0f} s "
          f"({server_cpu / wall:.2f} cores busy on average; {server_cpu / deploys:.2f} s "
          "per deploy)")  # fmt: skip
    print(f"  workers' CPU, their flow runs' included: {workers_cpu:.0f} s "
          f"({workers_cpu / deploys:.1f} s per deploy)")  # fmt: skip
    print(f"  load average at the end: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min), "
          f"{load[2]:.1f} (15 min)")  # fmt: skip
    if failures:
        print(f"  NOT CORRECT: {len(failures)} of {deploys}:")
        for line in failures:
            print(f"    {line}")
        return 1
    print(f"  correct: all {deploys} Completed and tracked succeeded; none waited on another "
          f"service's deploy ({overlap} ran at once)")  # fmt: skip
    return 0


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    sys.exit(main(*(args + [200, 4, 10][len(args) :])))
