"""The weekly DORA figures: deployment frequency, lead time for changes, change failure rate and
time to restore, from the tracking database, as a table artifact (prefect.yaml schedules it)."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from tasks.connect import tracking_ledger
from tasks.stats import publish_dora_figures

SINCE_PATTERN = r"^\s*\d+\s*[hdw]\s*$"


@flow(name="dora-stats", validate_parameters=True)
def dora_stats(
    since: Annotated[str, Field(pattern=SINCE_PATTERN)] = "7d",
    service: str | None = None,
    environment: str | None = None,
    tracking_block: str | None = None,
) -> list[dict[str, Any]]:
    """Publish the DORA figures of the deploys that finished in the last ``since``.

    Args:
        since: The period: a whole number of hours, days or weeks (12h, 7d, 2w).
        service: One service; empty for each service and all together.
        environment: One environment; empty for each.
        tracking_block: Name of the deployflow tracking database block; empty uses
            DEPLOYFLOW_DATABASE_URL or the local SQLite file of the machine running the flow.
    """
    ledger = tracking_ledger(tracking_block)
    return publish_dora_figures(ledger, since, service, environment)
