"""prefect.yaml's example automation on the real Prefect server: a ``deployflow.deploy.rolled-back``
event (as a deploy emits it) starts a run of the ``after-rollback`` deployment with the event's
facts as parameters; the follow-up flow itself leaves its artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.events import DeploymentTriggerTypes
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
from pydantic import TypeAdapter

from deployflow import events
from deployflow.polling import wait_for
from deployflow.release import ReleaseOutcome
from flows.followup import after_rollback
from tasks.events import send_events

pytestmark = pytest.mark.integration

PREFECT_YAML = Path(__file__).parents[3] / "prefect.yaml"


def yaml_deployment(name: str) -> dict[str, Any]:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    [found] = [d for d in spec["deployments"] if d["name"] == name]
    return found


def test_prefect_yaml_runs_the_follow_up_on_a_rollback(prefect_server):
    entry = yaml_deployment("after-rollback")
    assert entry["entrypoint"] == "flows/followup.py:after_rollback"
    triggers = [
        TypeAdapter(DeploymentTriggerTypes).validate_python(
            {"name": f"after-rollback__automation_{i}", **t}
        )
        for i, t in enumerate(entry["triggers"], start=1)
    ]
    # What `prefect deploy` does with the entry: the deployment, and its triggers as automations.
    deployment_id = after_rollback.to_deployment(name="after-rollback", triggers=triggers).apply()

    rolled_back = ReleaseOutcome(
        service="shop", environment="automation-prod", version="v3", deployment_id=41
    )
    rolled_back.status, rolled_back.message = "rolled_back", "rolled back to v2: errors 20.00%"
    succeeded = ReleaseOutcome(
        service="shop", environment="automation-prod", version="v2", deployment_id=40
    )
    succeeded.status, succeeded.message = "succeeded", "v2 serves all the traffic"
    send_events(events.ended(succeeded))
    sent: list[float] = []

    def runs() -> list[FlowRun] | None:
        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
        if not found and (not sent or time.monotonic() - sent[-1] > 10):
            # Again after a while: on a loaded machine the server may load the new automation
            # after the first event went by (deploys emit one event per rollback; so does this).
            send_events(events.ended(rolled_back))
            sent.append(time.monotonic())
        return found or None

    found = wait_for(runs, timeout=120, interval=0.5, what="the automation's flow run")
    run = found[0]
    assert run.parameters == {
        "deploy": "deployflow.deployment.41",
        "service": "shop",
        "version": "v3",
        "environment": "automation-prod",
        "reason": "rolled back to v2: errors 20.00%",
        "run": "",
    }

    # The event the automation reacted to is in the feed (persisted in batches, a little late).
    def feed() -> list[str] | None:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(prefix=["deployflow.deploy."]),
                    resource=EventResourceFilter(id=["deployflow.deployment.41"]),
                ),
                limit=50,
            )
        return [e.event for e in page.events] or None

    assert set(wait_for(feed, timeout=60, interval=0.5, what="the event")) == {
        "deployflow.deploy.rolled-back"
    }
    # Only rollbacks start the follow-up: every run is about row 41, none about 40.
    assert {r.parameters["deploy"] for r in runs() or []} == {"deployflow.deployment.41"}
    # What the run does once a worker picks it up.
    text = after_rollback(**run.parameters)
    assert text.startswith("# shop v3 was rolled back in automation-prod")
    assert "**Why:** rolled back to v2: errors 20.00%" in text
    assert "`deployflow report 41`" in text
    assert "deployflow history" not in text
