"""Sample inputs the tests share: the example spec and its environment, a minimal spec, a
rolled-back release."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.release import ReleaseOutcome, RollbackEvidence, RollbackRecord, Trigger
from deployflow.rollout import StageResult
from deployflow.spec import SpecError, parse_spec
from deployflow.verify import VerificationReport

EXAMPLE = Path(__file__).parents[1] / "examples" / "sandbox.yaml"
# What the example spec's ${VAR}s need to load (values the unit tests never connect to).
SANDBOX_ENV = {
    "DEPLOYFLOW_SANDBOX_STATE_DIR": "/tmp/sandbox",
    "DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET": "/tmp/sandbox/haproxy.sock",
    "DEPLOYFLOW_SANDBOX_FRONTEND_URL": "http://127.0.0.1:8080",
    "DEPLOYFLOW_SANDBOX_PROMETHEUS_URL": "http://127.0.0.1:9090",
}


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def problems(data: dict, env: dict | None = None) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "t.yaml", SANDBOX_ENV if env is None else env)
    return dict(info.value.problems)


def spec_data(**changes: object) -> dict:
    data: dict = {
        "service": "shop",
        "target": {"kind": "local-process", "command": ["app"], "state_dir": "state"},
        "router": {"kind": "haproxy", "admin_socket": "/run/h.sock",
                   "frontend_url": "http://lb.test/"},
        "metrics": {"kind": "prometheus", "url": "http://prom.test",
                    "queries": {"error_rate": "e{version}", "p95_latency": "p{version}",
                                "request_count": "r{version}"}},
    }  # fmt: skip
    data.update(changes)
    return data


def rolled_back() -> ReleaseOutcome:
    now = datetime.now(UTC)
    failed = Measurement(Outcome.FAILED, MetricSample(0.2, 0.02, 40), 0.01)
    breach = Breach("error_rate", 0.2, 0.05, "error rate 20.00% above the maximum 5.00%")
    return ReleaseOutcome(
        service="demo",
        environment="prod",
        version="v3",
        status="rolled_back",
        strategy="canary",
        previous_version="v2",
        stages=[StageResult(0, 5, Verdict.ROLLBACK, [failed], breach, now, now, {"failed": 1})],
        rollback=RollbackRecord(
            Trigger(0, 5, "error_rate", 0.2, 0.05, "error rate 20.00% above the maximum 5.00%"),
            verification=VerificationReport(()),
            evidence=RollbackEvidence(canary_log_tail="Traceback: boom"),
        ),
    )
