"""Fixtures' building blocks for the team-server path: Prefect on PostgreSQL, process workers.

Kept out of ``tests/e2e/conftest.py`` on purpose: that conftest's ``sandbox`` fixture runs flows in
the test process against ``prefect_test_harness`` (SQLite), whereas here everything the flow does
happens in worker subprocesses against a separate Prefect server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun, State
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.settings import PREFECT_API_URL, temporary_settings
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.sandbox.postgres import LocalPostgres
from deployflow.tracking import db, repository
from deployflow.tracking.models import Deployment
from tests.integration.prefect.conftest import REPO_ROOT, kill_group, start_in_own_group

POOL = "deployflow-process"


def clean_environ() -> dict[str, str]:
    """``os.environ`` without PREFECT_* and DEPLOYFLOW_* variables.

    A developer profile or another test module's settings (an API URL, a tracking database) must
    not leak into the subprocesses: each one gets exactly the team-server settings added on top.
    """
    return {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DEPLOYFLOW_"))}


def asyncpg_url(postgres: LocalPostgres, database: str) -> str:
    """The URL of ``database`` with the asyncpg driver, which the Prefect server requires."""
    return (
        make_url(postgres.url(database))
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False)
    )


@dataclass
class PrefectServer:
    """A ``prefect server start`` subprocess on PostgreSQL."""

    process: subprocess.Popen[bytes]
    api_url: str
    database_url: str  # the same PostgreSQL database, psycopg driver, for direct checks
    home: Path
    log: Path

    def healthy(self) -> bool:
        """True once ``/api/health`` answers 200; raises if the server process died."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"prefect server exited {self.process.returncode}:\n{self.log.read_text()}"
            )
        return httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200


@contextmanager
def prefect_server_on_postgres(
    postgres: LocalPostgres, database: str, home: Path, log: Path
) -> Iterator[PrefectServer]:
    """Start (not wait for) a Prefect server on a new PostgreSQL database; kill its group after.

    Yielding before the server is healthy lets the caller start other slow things (the sandbox)
    while the server runs its migrations; call ``wait_healthy`` before using the API.
    """
    psycopg_url = postgres.create_database(database)
    port = free_port()
    env = {
        **clean_environ(),
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url(postgres, database),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The API is what a team's workers and tests use; serving the dashboard only costs time.
        "PREFECT_UI_ENABLED": "false",
        # Events reach the API after a flush (5 s by default); the tests read worker events.
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
    }
    argv = [
        sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    process = start_in_own_group(argv, env, log)
    try:
        yield PrefectServer(process, f"http://127.0.0.1:{port}/api", psycopg_url, home, log)
    finally:
        kill_group(process)


def wait_healthy(server: PrefectServer, timeout: float = 90) -> None:
    """Wait for the server's health endpoint; the server log is in the error if it never comes."""
    try:
        wait_for(server.healthy, timeout=timeout, interval=0.25, what="prefect server health")
    except Exception as exc:
        raise AssertionError(f"prefect server not healthy:\n{server.log.read_text()}") from exc


def public_tables(database_url: str) -> set[str]:
    """Names of the tables in the ``public`` schema of a PostgreSQL database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def flow_run_ids_in_database(database_url: str) -> set[str]:
    """Ids of the flow runs stored in the Prefect server's own ``flow_run`` table."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(text("SELECT id FROM flow_run"))}
    finally:
        engine.dispose()


@contextmanager
def api_client(api_url: str) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client on ``api_url``, whatever server the test process is configured for."""
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def prefect_cli(env: Mapping[str, str], *args: str, timeout: float = 180) -> str:
    """Run ``python -m prefect <args>`` from the repository root; a non-zero exit fails."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=REPO_ROOT,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"prefect {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@dataclass
class Workers:
    """Running ``prefect worker start`` processes by name, with their log files."""

    processes: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]

    def log_text(self) -> str:
        """Every worker's log, for assertion messages."""
        return "\n".join(f"--- {name}\n{path.read_text()}" for name, path in self.logs.items())


@contextmanager
def process_workers(
    names: Iterable[str], env: Mapping[str, str], log_dir: Path, limit: int = 1
) -> Iterator[Workers]:
    """``prefect worker start`` per name on the pool; each process group is killed at the end.

    ``--limit 1`` by default: a worker runs one deploy at a time, as a team would size a worker
    that moves traffic; it also makes concurrent runs spread over the workers instead of one taking
    all. bench/bench_scale.py runs more at once.

    Runs started warm (deployments/warm_start.py, prefect.yaml's command) keep their zygotes in
    ``log_dir/warm`` unless ``env`` says otherwise; they are stopped with the workers.
    """
    env = {"DEPLOYFLOW_WARM_DIR": str(log_dir / "warm"), **env}
    workers = Workers({}, {})
    try:
        for name in names:
            argv = [
                sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                "--name", name, "--type", "process", "--limit", str(limit),
            ]  # fmt: skip
            log = log_dir / f"{name}.log"
            workers.logs[name] = log
            workers.processes[name] = start_in_own_group(argv, dict(env), log)
        yield workers
    finally:
        for process in workers.processes.values():
            # Prefect's process worker starts each flow run in a session of its own, so killing
            # the worker's group would orphan a run still going (seen: one blocked for minutes
            # on the dead server). Its group is its pid: kill it first.
            for child in child_pids(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child, signal.SIGKILL)
            kill_group(process)
        stop_zygotes(Path(env["DEPLOYFLOW_WARM_DIR"]))


def stop_zygotes(directory: Path) -> None:
    """Stop the warm-start zygotes listening in ``directory`` (their ``*.pid`` files) and wait
    until they are gone."""
    pids = []
    for pidfile in directory.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = int(pidfile.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    wait_for(
        lambda: not any(process_alive(pid) for pid in pids),
        timeout=30,
        interval=0.1,
        what="the warm-start zygotes to exit",
    )


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def child_pids(pid: int) -> list[int]:
    """Process ids whose parent is ``pid``, read from ``/proc`` (Linux)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # Fields after the command name, which is in parentheses and may itself hold spaces:
        # state, ppid, ...
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.append(int(entry.name))
    return children


def final_states(
    client: SyncPrefectClient, run_ids: list[UUID], workers: Workers
) -> dict[UUID, FlowRun] | None:
    """The runs once every one is in a final state, else None; raises if every worker died."""
    if all(p.poll() is not None for p in workers.processes.values()):
        raise RuntimeError("every worker exited")
    runs = {run_id: client.read_flow_run(run_id) for run_id in run_ids}
    if all(r.state is not None and r.state.is_final() for r in runs.values()):
        return runs
    return None


def run_logs_once_finished(client: SyncPrefectClient, run_id: UUID) -> list[tuple[int, str]] | None:
    """(level, message) of every log of the run, its tasks' included, once the run's own
    "Finished in state" line is stored (logs reach the server in batches; its tasks log such
    lines too); None before."""
    logs: list[Any] = []
    while True:  # the server answers at most a page at a time
        page = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            limit=200,
            offset=len(logs),
        )
        logs.extend(page)
        if len(page) < 200:
            break
    if not any("Finished in state" in log.message and log.task_run_id is None for log in logs):
        return None
    return [(log.level, log.message) for log in logs]


def executing_workers(client: SyncPrefectClient, run_ids: list[UUID]) -> dict[UUID, str] | None:
    """Which worker executed each run, from its ``prefect.worker.executed-flow-run`` event.

    Not from the run's ``prefect.worker.name`` label: a worker sets that label *before* it tries
    to claim the run (``BaseWorker._submit_run_and_capture_errors``), so when two workers race for
    one run the loser, whose claim is refused, can leave its own name on it. Only the worker that
    ran the process emits "executed-flow-run". None until every run has one (events are persisted
    in batches, a few seconds late).
    """
    related = [f"prefect.flow-run.{run_id}" for run_id in run_ids]
    page = client.read_events(
        EventFilter(
            event=EventNameFilter(name=["prefect.worker.executed-flow-run"]),
            related=EventRelatedFilter(id=related),
        ),
        limit=50,
    )
    found: dict[UUID, set[str]] = {}
    for event in page.events:
        for resource in event.related:
            if resource.id in related and event.resource.name is not None:
                found.setdefault(UUID(resource.id.rsplit(".", 1)[1]), set()).add(
                    event.resource.name
                )
    if set(found) != set(run_ids):
        return None
    assert all(len(names) == 1 for names in found.values()), f"a run executed twice: {found}"
    return {run_id: names.pop() for run_id, names in found.items()}


def state_types(client: SyncPrefectClient, run_id: UUID) -> list[str]:
    """The state types a flow run went through, oldest first (SCHEDULED, PENDING, RUNNING...)."""
    states: list[State[Any]] = client.read_flow_run_states(run_id)
    return [s.type.value for s in sorted(states, key=lambda s: s.timestamp)]


def tracked_rows(database_url: str, service: str, environment: str) -> list[dict[str, Any]]:
    """Every tracking row of ``service`` in ``environment``, oldest first (empty before any)."""
    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as s:
            ids = s.scalars(
                select(Deployment.id)
                .where(Deployment.service == service, Deployment.environment == environment)
                .order_by(Deployment.id)
            ).all()
            return [repository.deployment_to_dict(repository.get_deployment(s, i)) for i in ids]
    finally:
        engine.dispose()


def tracked_by_flow_run(database_url: str, flow_run_id: UUID) -> dict[str, Any]:
    """The tracking row that a flow run wrote, with its stages, incidents and checks."""
    engine = db.make_engine(database_url)
    try:
        with db.session_factory(engine)() as s:
            (row_id,) = s.scalars(
                select(Deployment.id).where(Deployment.flow_run_id == str(flow_run_id))
            ).all()
            return repository.deployment_to_dict(repository.get_deployment(s, row_id))
    finally:
        engine.dispose()
