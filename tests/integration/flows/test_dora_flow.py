"""The weekly DORA flow on the Prefect test server: the figures from the tracking database as the
``dora-figures`` table artifact, and its schedule in prefect.yaml."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger
from flows.dora import dora_stats

pytestmark = pytest.mark.integration
PREFECT_YAML = Path(__file__).parents[3] / "prefect.yaml"


async def latest_table(key: str) -> list[dict]:
    async with get_client() as client:
        (artifact,) = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
        )
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def test_weekly_flow_publishes_the_figures(
    prefect_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'tracking.db'}"
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", url)
    ledger = Ledger.for_url(url)
    now = datetime.now(UTC)
    with ledger._session() as s:
        for version, status, days in (("v1", "succeeded", 3), ("v2", "rolled_back", 2)):
            row = repository.create_deployment(
                s, service="shop", environment="production", version=version,
                strategy="canary", status="running", started_at=now - timedelta(days=days),
                commit_at=now - timedelta(days=days, hours=1),
            )  # fmt: skip
            repository.update_deployment(
                s, row.id, status=status, finished_at=now - timedelta(days=days, minutes=-5)
            )

    (figures,) = dora_stats(since="7d")

    assert (figures["deployments"], figures["changes"], figures["failures"]) == (1, 2, 1)
    assert figures["lead_time_seconds"] == pytest.approx(3900, abs=1)
    import asyncio

    (row,) = asyncio.run(latest_table("dora-figures"))
    assert row["service"] == "shop"
    assert row["change failure rate"] == "50.0% (1 of 2)"


def test_prefect_yaml_schedules_the_weekly_figures() -> None:
    deployments = {d["name"]: d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    weekly = deployments["dora-weekly"]
    assert weekly["entrypoint"] == "flows/dora.py:dora_stats"
    assert weekly["parameters"] == {"since": "7d"}
    assert weekly["schedules"] == [{"cron": "0 7 * * 1", "timezone": "UTC", "active": True}]
