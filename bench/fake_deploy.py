"""The deploy flow on in-memory backends, as a Prefect deployment's entrypoint for the benches.

``bench/bench_scale.py`` and ``bench/bench_start_latency.py`` register ``deploy_on_fakes`` on a
process work pool: a worker imports this file (and with it flows/deploy.py and everything a real
deploy imports) and runs the real steps, tasks, subflows and tracking database writes, while the
target, router and metrics are ``deployflow.fakes.backends.FakeService``. v1 serves when the run
starts; the version released behaves well, so every run should end Completed.
"""

from __future__ import annotations

from typing import Any

from prefect import State, flow
from prefect.runtime import flow_run

from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.spec import ServiceSpec, parse_spec
from flows.deploy import ReleaseRequest, finish, release
from tasks.connect import tracking_ledger


def fake_spec(service: str) -> ServiceSpec:
    """A two-stage canary; the backend sections are never built (the fakes replace them)."""
    return parse_spec({
        "service": service,
        "target": {"kind": "local-process", "command": ["app"], "state_dir": "/nonexistent"},
        "router": {"kind": "haproxy", "admin_socket": "/nonexistent/sock",
                   "frontend_url": "http://frontend.test"},
        "metrics": {"kind": "prometheus", "url": "http://prometheus.test",
                    "queries": {"error_rate": "{version}", "p95_latency": "{version}",
                                "request_count": "{version}"}},
        "analysis": {"interval": "10ms", "window": "1s", "baseline_window": "1s",
                     "min_requests": 10},
        "strategy": {"kind": "canary", "steps": [50, 100], "observe": "20ms"},
        "smoke": [{"name": "checkout", "path": "/api/checkout"}],
    })  # fmt: skip


@flow(name="deploy-on-fakes", flow_run_name="deploy {service} {version}")
def deploy_on_fakes(service: str, version: str = "v2", environment: str = "bench") -> State[Any]:
    """Release ``version`` of ``service`` through the deploy flow's steps on in-memory backends;
    the tracking database is the worker's (``DEPLOYFLOW_DATABASE_URL``)."""
    fake = FakeService()
    fake.run_stable("v1")
    backends = Backends(
        target=fake.target,
        router=fake.router,
        metrics=fake.metrics,
        notifiers=(fake.notifier,),
        ledger=tracking_ledger(None),
        http_transport=fake.transport,
    )
    run_id = flow_run.get_id()
    request = ReleaseRequest(version, environment, flow_run_id=str(run_id) if run_id else None)
    return finish(release(fake_spec(service), backends, request), backends)
