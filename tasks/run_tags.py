"""The tag that names a deploy run's outcome (``outcome:rolled-back``...): the Prefect UI's tag
filter finds it and its run list shows it (``flows.outcome_state``). Set when the outcome is known,
which for a rollback is before the run ends (``tasks.audiences.RunState``)."""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient

OUTCOME_TAG_PREFIX = "outcome:"


def outcome_label(status: str, *, dry_run: bool = False, rollback_failed: bool = False) -> str:
    """A deploy's outcome in the words of its tag: ``dry-run`` or ``succeeded`` for a success,
    ``rollback-failed`` for a rollback that could not restore traffic, else the status with
    dashes (``rolled-back``, ``failed``...). One rule for the run's own ending
    (``flows.outcome_state``) and for a state set afterwards by the reconciler."""
    if status == "succeeded":
        return "dry-run" if dry_run else "succeeded"
    if rollback_failed:
        return "rollback-failed"
    return status.replace("_", "-")


def tag_outcome(client: SyncPrefectClient, run_id: UUID, label: str) -> None:
    """Tag the run ``outcome:<label>``, replacing an outcome tag set earlier (a rollback whose
    stable version then failed its checks ends ``outcome:failed``)."""
    tag = f"{OUTCOME_TAG_PREFIX}{label}"
    tags = client.read_flow_run(run_id).tags
    kept = [t for t in tags if not t.startswith(OUTCOME_TAG_PREFIX)]
    if tags != [*kept, tag]:
        client.update_flow_run(run_id, tags=[*kept, tag])
