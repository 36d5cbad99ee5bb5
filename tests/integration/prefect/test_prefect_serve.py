"""``python -m deployments.serve`` registers the served deployment against the real server."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

from deployflow.polling import wait_for
from deployments.serve import DEFAULT_PARAMETERS
from tests.integration.prefect.conftest import kill_group, start_in_own_group

pytestmark = pytest.mark.integration


def _served_deployment(client):
    deployment = client.read_deployment_by_name("deploy/deploy")
    # prefect.yaml registers a deployment of the same name; only serve() tags it "served".
    return deployment if "served" in deployment.tags else None


def test_serve_registers_the_deploy_flow_without_a_work_pool(
    prefect_env: dict[str, str], tmp_path: Path
):
    log_path = tmp_path / "serve.log"
    served = start_in_own_group([sys.executable, "-m", "deployments.serve"], prefect_env, log_path)
    try:
        with get_client(sync_client=True) as client:
            try:
                deployment = wait_for(
                    lambda: _served_deployment(client),
                    timeout=45,
                    interval=0.5,
                    what="the served deploy/deploy deployment",
                )
            except Exception:
                pytest.fail(f"serve did not register; its output:\n{log_path.read_text()}")
        assert served.poll() is None, "serve exited instead of waiting for flow runs"
    finally:
        kill_group(served)

    assert deployment.work_pool_name is None
    assert deployment.entrypoint is not None
    assert deployment.entrypoint.endswith("flows/deploy.py:deploy")
    assert deployment.parameters == DEFAULT_PARAMETERS
    assert "version" in deployment.parameter_openapi_schema["required"]
