"""What the e2e tests share beyond their fixtures."""

from __future__ import annotations

import uuid


def artifact_markdown(flow_run_id: str, key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]),
            )
        )
    assert found, f"no artifact {key} on flow run {flow_run_id}"
    return str(found[0].data)
