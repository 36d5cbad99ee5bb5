"""The team-server set-up the benches share: PostgreSQL, a Prefect server on it, a tracking
database beside it, process workers, and the ``deploy_on_fakes`` deployment (bench/fake_deploy.py).

Built from the e2e tests' helpers (tests/e2e/team_conftest_helpers.py), so the benches measure the
path the team-server tests check.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the root, on the path
    sys.path.insert(0, str(REPO_ROOT))

from prefect.client.orchestration import SyncPrefectClient  # noqa: E402

from deployflow.polling import wait_for  # noqa: E402
from deployflow.sandbox.postgres import LocalPostgres  # noqa: E402
from deployflow.tracking import db  # noqa: E402
from tests.e2e.team_conftest_helpers import (  # noqa: E402
    POOL,
    PrefectServer,
    Workers,
    api_client,
    clean_environ,
    prefect_server_on_postgres,
    process_workers,
    wait_healthy,
)

ENTRYPOINT = "bench/fake_deploy.py:deploy_on_fakes"


@dataclass
class TeamServer:
    server: PrefectServer
    workers: Workers
    client: SyncPrefectClient
    deployment_id: UUID
    tracking_url: str


@contextmanager
def team_server(workers: int, limit: int, query_seconds: float = 1) -> Iterator[TeamServer]:
    """Everything up and the deployment registered; all of it stopped at the end. Workers ask
    for runs every ``query_seconds``."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="deployflow-bench-")))
        postgres = stack.enter_context(LocalPostgres())
        (tmp / "server").mkdir()
        server = stack.enter_context(
            prefect_server_on_postgres(postgres, "prefect", tmp / "server", tmp / "server.log")
        )
        tracking_url = postgres.create_database("tracking")
        db.upgrade(tracking_url)  # once, as a team's first deploy does; runs take the fast path
        wait_healthy(server, timeout=300)
        env = {
            **clean_environ(),
            "PREFECT_API_URL": server.api_url,
            "PREFECT_HOME": str(tmp / "worker-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            # Workers poll for scheduled runs every 10 s by default: part of the start latency a
            # team sees, but it would dominate these figures; 1 s shows the rest.
            "PREFECT_WORKER_QUERY_SECONDS": str(query_seconds),
            "DEPLOYFLOW_DATABASE_URL": tracking_url,
            "DEPLOYFLOW_DATA_DIR": str(tmp / "data"),
            # Zygotes of warm starts (deployments/warm_start.py): stopped with the workers.
            "DEPLOYFLOW_WARM_DIR": str(tmp / "warm"),
        }
        names = [f"worker-{i + 1}" for i in range(workers)]
        running = stack.enter_context(process_workers(names, env, tmp, limit=limit))
        client = stack.enter_context(api_client(server.api_url))
        # The first worker to start creates the process pool with its default job template.
        wait_for(lambda: _pool_exists(client), timeout=300, interval=0.5, what="the work pool")
        flow_id = client.create_flow_from_name("deploy-on-fakes")
        deployment_id = client.create_deployment(
            flow_id,
            "bench",
            entrypoint=ENTRYPOINT,
            work_pool_name=POOL,
            path=str(REPO_ROOT),
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
            ],
            enforce_parameter_schema=False,
        )
        yield TeamServer(server, running, client, deployment_id, tracking_url)


def _pool_exists(client: SyncPrefectClient) -> bool:
    try:
        client.read_work_pool(POOL)
    except Exception:
        return False
    return True
