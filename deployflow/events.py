"""What a deploy tells the world as events, so automations can react (a rollback pages somebody,
runs a follow-up flow...). Plain data here; ``tasks.audiences.PrefectEvents`` turns the deploy's
story (``deployflow.story``) into them and ``tasks/events.py`` sends them to Prefect.

Names: ``deployflow.deploy.started``, ``deployflow.deploy.stage.promoted``,
``deployflow.deploy.rolled-back``, ``deployflow.deploy.succeeded``, ``deployflow.deploy.aborted``
and ``deployflow.deploy.failed``. A rollback's event is sent the moment traffic is back on the
stable version (``rolled_back``), before its evidence is gathered; it is then the deploy's ending
(no second one is sent unless the stable version fails its checks: ``failed``). The event's
resource is the deploy (its tracking row); the service, the version and the environment are
related resources with the roles ``service``, ``version`` and ``environment``, so an automation
can match, for example, every rollback of ``payments`` in ``production``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from deployflow.analysis import Verdict
from deployflow.release import ReleaseOutcome, Status
from deployflow.rollout import StageResult
from deployflow.story import Deploy, RolledBack

PREFIX = "deployflow.deploy"

_ENDINGS: dict[Status, str] = {
    "succeeded": "succeeded",
    "rolled_back": "rolled-back",
    "aborted": "aborted",
    "failed": "failed",
}


@dataclass(frozen=True)
class DeployEvent:
    """One event, in the shape of Prefect's ``emit_event`` arguments."""

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any] = field(default_factory=dict)


class DeployIdentity(Protocol):
    """Which deploy an event is about (a ``ReleaseOutcome`` is one)."""

    @property
    def service(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def environment(self) -> str: ...
    @property
    def deployment_id(self) -> int | None: ...
    @property
    def flow_run_id(self) -> str | None: ...


def _resources(outcome: DeployIdentity) -> tuple[dict[str, str], list[dict[str, str]]]:
    deploy = outcome.deployment_id if outcome.deployment_id is not None else "untracked"
    resource = {
        "prefect.resource.id": f"deployflow.deployment.{deploy}",
        "prefect.resource.name": f"{outcome.service} {outcome.version} to {outcome.environment}",
    }
    related = [
        {
            "prefect.resource.id": f"deployflow.service.{outcome.service}",
            "prefect.resource.role": "service",
            "prefect.resource.name": outcome.service,
        },
        {
            "prefect.resource.id": f"deployflow.version.{outcome.service}.{outcome.version}",
            "prefect.resource.role": "version",
            "prefect.resource.name": outcome.version,
        },
        {
            "prefect.resource.id": f"deployflow.environment.{outcome.environment}",
            "prefect.resource.role": "environment",
            "prefect.resource.name": outcome.environment,
        },
    ]
    if outcome.flow_run_id:
        # The deploy's own run: the feed links to it, and tells apart deploys whose tracking ids
        # are alike (several tracking databases under one Prefect server).
        related.append(
            {
                "prefect.resource.id": f"prefect.flow-run.{outcome.flow_run_id}",
                "prefect.resource.role": "deploy-run",
            }
        )
    return resource, related


def started(outcome: Deploy | ReleaseOutcome) -> DeployEvent:
    """The deploy has its tracking row and begins the steps."""
    resource, related = _resources(outcome)
    payload = {
        "previous_version": outcome.previous_version,
        "dry_run": outcome.dry_run,
        "git_ref": outcome.git_ref,
    }
    return DeployEvent(f"{PREFIX}.started", resource, related, payload)


def stage_promoted(deploy: DeployIdentity, stage: StageResult) -> DeployEvent | None:
    """The event of one stage whose analysis promoted it, or None for any other verdict."""
    if stage.verdict != Verdict.PROMOTE:
        return None
    resource, related = _resources(deploy)
    payload = {"stage": stage.index, "weight": stage.weight, **stage.last_values()}
    return DeployEvent(f"{PREFIX}.stage.promoted", resource, related, payload)


def stages_promoted(outcome: ReleaseOutcome) -> list[DeployEvent]:
    """One event per stage whose analysis promoted it, in order."""
    found = (stage_promoted(outcome, stage) for stage in outcome.stages)
    return [event for event in found if event is not None]


def ended(outcome: ReleaseOutcome) -> DeployEvent:
    """How the deploy ended: succeeded, rolled-back, aborted or failed, with the reason."""
    resource, related = _resources(outcome)
    payload: dict[str, Any] = {
        "status": outcome.status,
        "message": outcome.message,
        "previous_version": outcome.previous_version,
        "strategy": outcome.strategy,
        "dry_run": outcome.dry_run,
        # The after-rollback automation's link to the run ("" renders as an empty parameter).
        "flow_run_id": outcome.flow_run_id or "",
    }
    if outcome.rollback is not None:
        payload["trigger"] = outcome.rollback.trigger.to_dict()
    return DeployEvent(f"{PREFIX}.{_ENDINGS[outcome.status]}", resource, related, payload)


def rolled_back(deploy: Deploy, event: RolledBack, strategy: str | None = None) -> DeployEvent:
    """The rollback, as soon as traffic is back on the stable version: the same name and payload
    as ``ended`` gives a rolled-back outcome (an automation cannot tell them apart)."""
    resource, related = _resources(deploy)
    payload: dict[str, Any] = {
        "status": "rolled_back",
        "message": f"rolled back to {event.restored_to}: {event.trigger.headline}",
        "previous_version": deploy.previous_version,
        "strategy": strategy,
        "dry_run": deploy.dry_run,
        "flow_run_id": deploy.flow_run_id or "",
        "trigger": event.trigger.to_dict(),
    }
    return DeployEvent(f"{PREFIX}.{_ENDINGS['rolled_back']}", resource, related, payload)
