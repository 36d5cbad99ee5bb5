"""Signals beyond the canary queries, in whole deploys on the sandbox: one blocked before anything
starts by an alert already firing and a dependency down, one rolled back by an alert the sandbox
Prometheus's rule raises in the real Alertmanager, and one rolled back by its logs alone. The tests
run in order on one sandbox whose stable version stays v1 (the alert test comes before the logs
test, whose spec has no alerts section, so no test waits for another's alert to resolve).
"""

from __future__ import annotations

import json

import pytest

from deployflow.polling import wait_for
from deployflow.processes import free_port
from deployflow.sandbox.prometheus import ALERT_LOG_ERRORS
from deployflow.sandbox.supervisor import Sandbox
from deployflow.spec import load_spec
from tasks.artifacts import artifact_key
from tests.backends import build_router, build_target
from tests.e2e.conftest import EXAMPLE_SPEC
from tests.e2e.helpers import artifact_markdown, deploy_in_process, two_stage_spec

pytestmark = pytest.mark.e2e

# Both versions answer every request with 200 on time; one in five writes an ERROR line.
LOG_ONLY_FAULTS = json.dumps({"v4": {"log_errors": 0.2}, "v5": {"log_errors": 0.2}})

LOGS = r"""
logs:
  source:
    kind: file
    paths: ["${DEPLOYFLOW_SANDBOX_STATE_DIR}/logs/{version}.log"]
  patterns: ['\bERROR\b']
  max_per_minute: 5
"""
ALERTS = """
alerts:
  kind: alertmanager
  url: ${DEPLOYFLOW_SANDBOX_ALERTMANAGER_URL}
  matchers: ['service="demo"']
  timeout: 2s
"""


def assert_only_v1_serves() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    versions = {i.version: i for i in build_target(spec).instances()}
    assert set(versions) == {"v1"}
    state = build_router(spec).state()
    assert (state.stable, state.canary) == (versions["v1"].address, None)


@pytest.fixture
def log_only_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOYFLOW_DEMO_FAULTS", LOG_ONLY_FAULTS)


def no_demo_alert_fires(sandbox: Sandbox) -> None:
    """Alerts an earlier test's canary raised resolve once it is gone (its series go stale)."""
    am = sandbox.require_alertmanager()
    wait_for(
        lambda: not [a for a in am.active_alerts() if a["labels"].get("service") == "demo"],
        timeout=60,
        interval=0.5,
        what="no demo alert active in Alertmanager",
    )


def test_an_alert_firing_before_the_start_and_a_dependency_down_block_the_deploy(
    sandbox: Sandbox,
) -> None:
    am = sandbox.require_alertmanager()
    incident = {"alertname": "DemoDatabaseDown", "service": "demo", "severity": "page"}
    dependencies = f"""
dependencies:
  - name: payments
    kind: http
    url: http://127.0.0.1:{free_port()}/healthz
    timeout: 1s
  - name: scraping
    kind: prometheus
    url: ${{DEPLOYFLOW_SANDBOX_PROMETHEUS_URL}}
    query: min(up{{job="deployflow-demo"}})
    min: 1
"""
    am.post_alert(incident, summary="primary database unreachable")
    try:
        with two_stage_spec("signals", "blocked", ALERTS + dependencies) as spec_file:
            result = deploy_in_process(spec_file, "v6")
    finally:
        am.post_alert(incident, ended=True)

    assert result["status"] == "aborted", result["message"]
    message = result["message"]
    assert message.startswith("blocked before any traffic moved: alert(s) already firing: ")
    assert "DemoDatabaseDown" in message
    assert "do not deploy into an incident" in message
    assert "dependency down: payments (http://127.0.0.1:" in message
    assert "scraping" not in message  # up, so not named
    assert result["stages"] == []
    assert_only_v1_serves()


def test_an_alert_that_fires_during_the_release_rolls_it_back(
    sandbox: Sandbox, log_only_faults: None
) -> None:
    no_demo_alert_fires(sandbox)  # none should: the test before resolved its own
    with two_stage_spec("signals", "alerts", ALERTS) as spec_file:
        result = deploy_in_process(spec_file, "v5")

    assert result["status"] == "rolled_back", result["message"]
    rollback = result["rollback"]
    # In a stage, or (when the alert came after the last stage promoted) in verification.
    assert rollback["metric"] == "alerts", rollback
    assert ALERT_LOG_ERRORS in rollback["reason"]
    assert rollback["verified"] is True
    assert_only_v1_serves()


def test_error_lines_alone_roll_back_a_release_whose_metrics_are_healthy(
    sandbox: Sandbox, log_only_faults: None
) -> None:
    with two_stage_spec("signals", "logs", LOGS) as spec_file:
        result = deploy_in_process(spec_file, "v4")

    assert result["status"] == "rolled_back", result["message"]
    rollback = result["rollback"]
    assert rollback["metric"] == "log_errors", rollback
    assert rollback["stage"] == 0
    assert rollback["value"] > rollback["threshold"] == 5
    assert "matching the error patterns" in rollback["reason"]
    assert rollback["verified"] is True
    # The metrics saw nothing wrong: every request answered 200.
    assert result["stages"][0]["values"]["error_rate"] in (0.0, None)
    incident = artifact_markdown(result["flow_run_id"], artifact_key("incident", "demo"))
    assert "ERROR v4 " in incident
    assert "injected fault (log_errors)" in incident
    # The lines the log signal matched are the report's evidence, not only the log's tail.
    matched = incident.split("## What the other signals saw")[1].split("```")[1]
    assert any(line.startswith("log: ") and "ERROR v4 " in line for line in matched.splitlines())
    assert_only_v1_serves()
