"""The DORA figures as a step: read from the tracking database, published as a table artifact."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from deployflow.dora import parse_since, table_rows
from deployflow.tracking.ledger import Ledger
from tasks.retry_policy import DATABASE, retried


@task(name="dora-figures", cache_policy=NO_CACHE, **retried(DATABASE))
def publish_dora_figures(
    ledger: Ledger, since: str, service: str | None, environment: str | None
) -> list[dict[str, object]]:
    """Compute the figures over the last ``since`` and publish them as the ``dora-figures``
    table artifact; returns them as data."""
    until = datetime.now(UTC)
    figures = ledger.dora(
        until - parse_since(since), until, service=service, environment=environment
    )
    rows = table_rows(figures)
    create_table_artifact(
        key="dora-figures",
        table=rows or [{"service": "none", "note": f"no deploys finished in the last {since}"}],
        description=f"DORA figures over the last {since}, to {until:%Y-%m-%d %H:%M} UTC",
    )
    get_run_logger().info("DORA figures over the last %s: %d row(s)", since, len(rows))
    return [f.to_dict() for f in figures]
