"""What the flow integration tests share: a spec on in-memory backends, the tracking row of a
release, which versions run and which one serves."""

from __future__ import annotations

from pathlib import Path

from deployflow.fakes.backends import FakeService
from deployflow.release import ReleaseOutcome
from deployflow.spec import ServiceSpec, parse_spec
from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger


def make_spec(tmp: Path, **extra: object) -> ServiceSpec:
    data = {
        "service": "shop",
        "target": {"kind": "local-process", "command": ["app"], "state_dir": str(tmp)},
        "router": {
            "kind": "haproxy",
            "admin_socket": str(tmp / "sock"),
            "frontend_url": "http://frontend.test",
        },
        "metrics": {
            "kind": "prometheus",
            "url": "http://prometheus.test",
            "queries": {"error_rate": "{version}", "p95_latency": "{version}",
                        "request_count": "{version}"},
        },
        "analysis": {"interval": "5ms", "window": "1s", "baseline_window": "1s",
                     "min_requests": 10},
        "strategy": {"kind": "canary", "steps": [5, 25, 50, 100], "observe": "10ms"},
        "smoke": [{"name": "checkout", "path": "/api/checkout"}],
        **extra,
    }  # fmt: skip
    return parse_spec(data)


def recorded(ledger: Ledger, outcome: ReleaseOutcome):
    assert outcome.deployment_id is not None
    with ledger._sessions() as s:
        return repository.deployment_to_dict(
            repository.get_deployment(s, outcome.deployment_id), include_children=True
        )


def running(service: FakeService) -> set[str]:
    return {i.version for i in service.target.instances()}


def serving(service: FakeService, version: str) -> bool:
    state = service.router.state()
    address = next(i.address for i in service.target.instances() if i.version == version)
    return state.stable == address and state.canary_weight == 0
