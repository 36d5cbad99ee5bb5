"""Sample inputs the tests share: the example spec and its environment, a minimal spec, a
rolled-back release, and a release recorded and read back as its reports' record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from deployflow.analysis import Breach, Measurement, MetricSample, Outcome, Verdict
from deployflow.release import ReleaseOutcome, RollbackEvidence, RollbackRecord, Trigger
from deployflow.rollout import StageResult
from deployflow.spec import SpecError, parse_spec
from deployflow.tracking.ledger import Ledger
from deployflow.tracking.record import DeployRecord
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


def record_in(ledger: Ledger, outcome: ReleaseOutcome) -> DeployRecord:
    """``outcome`` recorded as a deploy records it (its row, each stage as it ended, each flag
    change, the end), read back as the record its reports are rendered from."""
    outcome.deployment_id = ledger.start(outcome)
    for s in outcome.stages:
        ledger.stage_observed(outcome.deployment_id, s)
    for f in outcome.flag_changes:
        ledger.flag_changed(outcome.deployment_id, f["flag"], f["percent"], f["reason"])
    ledger.record_outcome(outcome, outcome.message)
    return ledger.record(outcome.deployment_id)


_NOTHING_RUNNING = """\
service: SERVICE
target:
  kind: command
  start: {argv: [echo, '{"host": "127.0.0.1", "port": 9}']}
  stop: {argv: ["true"]}
  status: {argv: [echo, "[]"]}
router:
  kind: command
  set_split: {argv: ["true"]}
  state: {argv: [echo, '{"stable": null, "canary": null, "canary_weight": 0}']}
  frontend_url: http://127.0.0.1:9
metrics:
  kind: prometheus
  url: http://127.0.0.1:9
  queries: {error_rate: "e{version}", p95_latency: "p{version}", request_count: "r{version}"}
strategy:
  kind: canary
  steps: [50, 100]
"""


def nothing_running_spec(service: str) -> str:
    """The YAML of a service whose dry run needs nothing running: its command hooks print an empty
    world, its Prometheus is nowhere (a dry run queries nothing), a canary of two steps."""
    return _NOTHING_RUNNING.replace("SERVICE", service)
