"""Read and write deploy records. Every function takes a Session: the caller owns the transaction.

Writes ``flush`` so generated ids are available, but never commit: the flow decides when a group of
records becomes durable (for example, the stage and weight are committed before traffic moves).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from deployflow.checks.result import CheckStatus
from deployflow.manual_rollback import ROLLBACK_STRATEGY, PastDeploy
from deployflow.schema import SchemaChangeRecord, SchemaRange
from deployflow.tracking.models import (
    CheckResult,
    Deployment,
    DeploymentStatus,
    DeployReport,
    FlagChange,
    Incident,
    SchemaChange,
    StageResult,
    utcnow,
)


class DeploymentNotFound(LookupError):
    """No deployment has the given id."""


# Fields a running deploy may change; identity fields (service, environment, version, strategy,
# started_at, dry_run) are fixed at creation so history cannot be rewritten by accident.
UPDATABLE_FIELDS = frozenset(
    {
        "status",
        "strategy",
        "previous_version",
        "flow_run_id",
        "current_stage",
        "canary_weight",
        "git_ref",
        "finished_at",
        "summary",
        "heartbeat_at",
        "commit_at",
        "details",
    }
)


@dataclass(frozen=True)
class DeployedVersion:
    """What runs in an environment now, according to the last successful deploy."""

    deployment_id: int
    version: str
    git_ref: str | None
    finished_at: datetime | None


def _status(value: DeploymentStatus | str) -> DeploymentStatus:
    try:
        return DeploymentStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in DeploymentStatus)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def _check_status(value: CheckStatus | str) -> CheckStatus:
    try:
        return CheckStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in CheckStatus)
        raise ValueError(f"status: {value!r} is not one of {allowed}") from None


def _required_text(field: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: must be a non-empty string, got {value!r}")
    return value


def _weight(field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{field}: must be an integer percentage from 0 to 100, got {value!r}")
    return value


_NON_FINITE = {math.inf: "+Inf", -math.inf: "-Inf"}


def _json_safe(field: str, value: Any, path: str = "") -> Any:
    """Make ``value`` storable in a JSON column on SQLite and PostgreSQL, or say what is wrong.

    Non-finite floats become Prometheus' own spellings ("NaN", "+Inf", "-Inf"): PostgreSQL rejects
    bare NaN in JSON, and a NaN measurement is exactly the evidence worth keeping.
    """
    where = f"{field}{path}"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, value)
    if isinstance(value, Enum):
        return _json_safe(field, value.value, path)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        safe: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: JSON object keys must be strings, got {key!r}")
            safe[key] = _json_safe(field, item, f"{path}.{key}")
        return safe
    if isinstance(value, list | tuple):
        return [_json_safe(field, item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise ValueError(
        f"{where}: {type(value).__name__} cannot be stored as JSON "
        "(use str, int, float, bool, None, lists, dicts or datetimes)"
    )


def create_deployment(
    session: Session,
    *,
    service: str,
    environment: str,
    version: str,
    strategy: str,
    previous_version: str | None = None,
    dry_run: bool = False,
    flow_run_id: str | None = None,
    git_ref: str | None = None,
    status: DeploymentStatus | str = DeploymentStatus.PENDING,
    started_at: datetime | None = None,
    commit_at: datetime | None = None,
) -> Deployment:
    """Record a new deploy and return it with its id assigned.

    Args:
        session: The caller's session; nothing is committed here.
        service: Service name from the spec.
        environment: Target environment (e.g. ``"staging"``).
        version: Version being deployed.
        strategy: Rollout strategy (e.g. ``"canary"``, ``"blue_green"``).
        previous_version: Version running before this deploy, if known.
        dry_run: True when nothing is actually changed.
        flow_run_id: Prefect flow run id, for linking back to the run.
        git_ref: Commit or ref being deployed.
        status: Initial status, ``pending`` by default.
        started_at: Timezone-aware start time; now when omitted.
        commit_at: When the commit ``git_ref`` names was made (lead time for changes).

    Returns:
        The flushed ``Deployment``.

    Raises:
        ValueError: A field is empty or the status is unknown; the message names the field.
    """
    deployment = Deployment(
        service=_required_text("service", service),
        environment=_required_text("environment", environment),
        version=_required_text("version", version),
        strategy=_required_text("strategy", strategy),
        previous_version=previous_version,
        dry_run=dry_run,
        flow_run_id=flow_run_id,
        git_ref=git_ref,
        status=_status(status),
        canary_weight=0,
        started_at=started_at if started_at is not None else utcnow(),
        commit_at=commit_at,
    )
    session.add(deployment)
    session.flush()
    return deployment


def get_deployment(session: Session, deployment_id: int) -> Deployment:
    """Load a deployment with its stages, incidents and checks.

    Raises:
        DeploymentNotFound: No deployment has this id.
    """
    deployment = session.scalar(
        select(Deployment)
        .where(Deployment.id == deployment_id)
        .options(
            selectinload(Deployment.stages),
            selectinload(Deployment.incidents),
            selectinload(Deployment.checks),
            selectinload(Deployment.flag_changes),
            selectinload(Deployment.reports),
            selectinload(Deployment.schema_changes),
        )
    )
    if deployment is None:
        raise DeploymentNotFound(f"deployment {deployment_id} does not exist")
    return deployment


def update_deployment(session: Session, deployment_id: int, **fields: Any) -> Deployment:
    """Change fields of a deployment (status, current_stage, canary_weight, summary, ...).

    Moving to a terminal status (succeeded, rolled_back, failed, aborted) sets ``finished_at`` to
    now unless it is given or already set.

    Args:
        session: The caller's session; nothing is committed here.
        deployment_id: Id of the deployment.
        **fields: Any of ``UPDATABLE_FIELDS``.

    Returns:
        The updated, flushed ``Deployment``.

    Raises:
        ValueError: An unknown field or a bad value; the message names the field.
        DeploymentNotFound: No deployment has this id.
    """
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise ValueError(
            f"cannot update {', '.join(unknown)}: updatable fields are "
            f"{', '.join(sorted(UPDATABLE_FIELDS))}"
        )
    deployment = session.get(Deployment, deployment_id)
    if deployment is None:
        raise DeploymentNotFound(f"deployment {deployment_id} does not exist")
    if "status" in fields:
        fields["status"] = _status(fields["status"])
    if "canary_weight" in fields:
        _weight("canary_weight", fields["canary_weight"])
    if fields.get("details") is not None:
        fields["details"] = _json_safe("details", fields["details"])
    for name, value in fields.items():
        setattr(deployment, name, value)
    if deployment.status.is_terminal and deployment.finished_at is None:
        deployment.finished_at = utcnow()
    session.flush()
    return deployment


def add_stage_result(
    session: Session,
    deployment_id: int,
    *,
    index: int,
    weight: int,
    verdict: str,
    started_at: datetime,
    finished_at: datetime | None = None,
    measurements: Sequence[Mapping[str, Any]] = (),
    reason: str | None = None,
    label: str | None = None,
    note: str | None = None,
) -> StageResult:
    """Record the analysis verdict of one rollout stage.

    Args:
        session: The caller's session; nothing is committed here.
        deployment_id: Id of the deployment.
        index: Stage number, from 0.
        weight: Traffic percentage the new version had during the stage.
        verdict: The analysis verdict (``promote``, ``rollback``, ``inconclusive``, ...).
        started_at: When the stage began (timezone-aware).
        finished_at: When the verdict was reached.
        measurements: One JSON-compatible dict per measurement taken.
        reason: Why this verdict, in words.
        label: What the stage observed when it was not a canary at ``weight``.
        note: How a promotion was reached when it was not on evidence alone.

    Raises:
        ValueError: A bad value; the message names the field.
    """
    stage = StageResult(
        deployment_id=deployment_id,
        index=index,
        weight=_weight("weight", weight),
        verdict=_required_text("verdict", verdict),
        started_at=started_at,
        finished_at=finished_at,
        measurements=_json_safe("measurements", list(measurements)),
        reason=reason,
        label=label or None,
        note=note or None,
    )
    session.add(stage)
    session.flush()
    return stage


def set_stage_verdict(
    session: Session, deployment_id: int, *, index: int, verdict: str, reason: str | None
) -> StageResult:
    """Change the verdict of a recorded stage (a manual gate refused a stage its figures had
    promoted); the latest row of that stage is changed.

    Raises:
        LookupError: No such stage was recorded for that deployment.
    """
    stage = session.scalars(
        select(StageResult)
        .where(StageResult.deployment_id == deployment_id, StageResult.index == index)
        .order_by(StageResult.id.desc())
        .limit(1)
    ).first()
    if stage is None:
        raise LookupError(f"deployment {deployment_id} has no recorded stage {index}")
    stage.verdict = _required_text("verdict", verdict)
    stage.reason = reason
    session.flush()
    return stage


def add_incident(
    session: Session,
    deployment_id: int,
    *,
    metric: str,
    reason: str,
    stage: int | None = None,
    value: float | None = None,
    threshold: float | None = None,
    evidence: Mapping[str, Any] | None = None,
    created_at: datetime | None = None,
) -> Incident:
    """Record why a deploy was rolled back or stopped.

    Raises:
        ValueError: A bad value; the message names the field.
    """
    incident = Incident(
        deployment_id=deployment_id,
        stage=stage,
        metric=_required_text("metric", metric),
        value=value,
        threshold=threshold,
        reason=_required_text("reason", reason),
        evidence=_json_safe("evidence", dict(evidence or {})),
        created_at=created_at if created_at is not None else utcnow(),
    )
    session.add(incident)
    session.flush()
    return incident


def add_check_result(
    session: Session,
    deployment_id: int,
    *,
    step: str,
    name: str,
    status: CheckStatus | str,
    figure: str | None = None,
    reason: str | None = None,
    duration_seconds: float | None = None,
    details: Mapping[str, Any] | None = None,
) -> CheckResult:
    """Record one check (e.g. step ``pre_checks``, name ``unit tests``) and its outcome.

    Raises:
        ValueError: Unknown status, or ``skipped`` without a reason; the message names the field.
    """
    check_status = _check_status(status)
    if check_status is CheckStatus.SKIPPED and not (reason and reason.strip()):
        raise ValueError(
            "reason: required when status is 'skipped' (say why the check did not run)"
        )
    check = CheckResult(
        deployment_id=deployment_id,
        step=_required_text("step", step),
        name=_required_text("name", name),
        status=check_status,
        figure=figure,
        reason=reason,
        duration_seconds=duration_seconds,
        details=_json_safe("details", dict(details or {})),
    )
    session.add(check)
    session.flush()
    return check


def add_schema_change(
    session: Session,
    deployment_id: int,
    *,
    before: str | None,
    after: str | None,
    status: str,
    schema: Mapping[str, Any],
    command: str,
    detail: str = "",
) -> SchemaChange:
    """Record a schema change the deploy applied (or tried to): the revision before and after."""
    change = SchemaChange(
        deployment_id=deployment_id, revision_before=before, revision_after=after,
        status=status, schema=dict(schema), command=command, detail=detail,
    )  # fmt: skip
    session.add(change)
    session.flush()
    return change


def settle_schema_change(
    session: Session, change_id: int, *, status: str, detail: str, after: str | None
) -> None:
    """What became of a schema change after a rollback (kept, downgraded, left)."""
    change = session.get(SchemaChange, change_id)
    if change is None:
        raise DeploymentNotFound(f"schema change {change_id} does not exist")
    change.status, change.detail, change.revision_after = status, detail, after
    change.settled_at = datetime.now(UTC)


def schema_history(session: Session, service: str, environment: str) -> list[SchemaChangeRecord]:
    """The schema changes releases of a service applied in an environment, oldest first."""
    rows = session.execute(
        select(SchemaChange, Deployment.version, Deployment.previous_version)
        .join(Deployment, SchemaChange.deployment_id == Deployment.id)
        .where(Deployment.service == service, Deployment.environment == environment)
        .order_by(SchemaChange.applied_at, SchemaChange.id)
    ).all()
    return [
        SchemaChangeRecord(
            deployment_id=change.deployment_id,
            version=version,
            previous_version=previous,
            revision_before=change.revision_before,
            revision_after=change.revision_after,
            status=change.status,
            schema=SchemaRange.of(change.schema or {}),
            applied_at=change.applied_at,
        )
        for change, version, previous in rows
    ]


def add_flag_change(
    session: Session, deployment_id: int, *, flag: str, percent: int, reason: str
) -> FlagChange:
    """Record that the deploy set ``flag`` to ``percent`` of users, and why."""
    change = FlagChange(
        deployment_id=deployment_id,
        flag=_required_text("flag", flag),
        percent=_weight("percent", percent),
        reason=_required_text("reason", reason),
    )
    session.add(change)
    session.flush()
    return change


REPORT_KINDS = ("incident", "summary")


def save_report(
    session: Session,
    deployment_id: int,
    *,
    kind: str,
    markdown: str,
    chart_png: bytes | None = None,
) -> DeployReport:
    """Keep the report of a deploy; a deploy has one of each kind, a new one replaces it.

    Raises:
        ValueError: ``kind`` is not ``incident`` or ``summary``, or the markdown is empty.
    """
    if kind not in REPORT_KINDS:
        raise ValueError(f"kind: must be one of {', '.join(REPORT_KINDS)}, got {kind!r}")
    for old in session.scalars(
        select(DeployReport).where(
            DeployReport.deployment_id == deployment_id, DeployReport.kind == kind
        )
    ):
        session.delete(old)
    report = DeployReport(
        deployment_id=deployment_id,
        kind=kind,
        markdown=_required_text("markdown", markdown),
        chart_png=chart_png,
    )
    session.add(report)
    session.flush()
    return report


def find_deployment(session: Session, run_id: str) -> Deployment | None:
    """The deployment a person names: its Prefect flow run id (or a unique prefix of at least 8
    characters), or its tracking id. None when nothing matches, or a prefix matches several."""
    run_id = run_id.strip()
    if not run_id:
        return None
    exact = session.scalar(select(Deployment.id).where(Deployment.flow_run_id == run_id).limit(1))
    if exact is None and len(run_id) >= 8:
        matches = list(
            session.scalars(
                select(Deployment.id)
                .where(Deployment.flow_run_id.startswith(run_id, autoescape=True))
                .limit(2)
            )
        )
        exact = matches[0] if len(matches) == 1 else None
    if exact is None and run_id.isdigit():
        exact = session.scalar(select(Deployment.id).where(Deployment.id == int(run_id)))
    return get_deployment(session, exact) if exact is not None else None


def finished_since(
    session: Session,
    since: datetime,
    *,
    service: str | None = None,
    environment: str | None = None,
) -> list[Deployment]:
    """Real (not dry-run) deploys that ended at or after ``since``, with their stages, oldest
    first; the DORA figures are computed from them."""
    query = (
        select(Deployment)
        .where(
            Deployment.dry_run.is_(False),
            Deployment.finished_at.is_not(None),
            Deployment.finished_at >= since,
        )
        .options(selectinload(Deployment.stages))
    )
    if service is not None:
        query = query.where(Deployment.service == service)
    if environment is not None:
        query = query.where(Deployment.environment == environment)
    return list(session.scalars(query.order_by(Deployment.finished_at, Deployment.id)))


def last_successful(session: Session, service: str, environment: str) -> DeployedVersion | None:
    """The version (and git ref) currently deployed: the newest real succeeded deploy.

    Dry runs are ignored because they changed nothing. "Newest" is by finish time, since the deploy
    that finished last is the one whose version is running.
    """
    finished = func.coalesce(Deployment.finished_at, Deployment.started_at)
    released = (Deployment.status == DeploymentStatus.SUCCEEDED) & (
        Deployment.strategy != ROLLBACK_STRATEGY
    )
    undone = (Deployment.status == DeploymentStatus.ROLLED_BACK) & (
        Deployment.strategy == ROLLBACK_STRATEGY
    )
    where = (
        Deployment.service == service,
        Deployment.environment == environment,
        Deployment.dry_run.is_(False),
    )
    deployment = session.scalar(
        select(Deployment)
        .where(*where, released | undone)
        .order_by(finished.desc(), Deployment.id.desc())
        .limit(1)
    )
    if deployment is not None and deployment.strategy == ROLLBACK_STRATEGY:
        # A person rolled back to previous_version: its last release is what runs (its git ref).
        rollback = deployment
        deployment = session.scalar(
            select(Deployment)
            .where(*where, released, Deployment.version == rollback.previous_version)
            .order_by(finished.desc(), Deployment.id.desc())
            .limit(1)
        )
        if deployment is None and rollback.previous_version is not None:
            # It went live before deployflow tracked a release of it: no git ref is known.
            return DeployedVersion(
                deployment_id=rollback.id,
                version=rollback.previous_version,
                git_ref=None,
                finished_at=rollback.finished_at,
            )
    if deployment is None:
        return None
    return DeployedVersion(
        deployment_id=deployment.id,
        version=deployment.version,
        git_ref=deployment.git_ref,
        finished_at=deployment.finished_at,
    )


def released_before(
    session: Session, service: str, environment: str, before: datetime
) -> DeployedVersion | None:
    """What ran before a deploy that started at ``before``: the newest real succeeded deploy
    that finished before then (its git ref is where the released commits start)."""
    deployment = session.scalar(
        select(Deployment)
        .where(
            Deployment.service == service,
            Deployment.environment == environment,
            Deployment.status == DeploymentStatus.SUCCEEDED,
            Deployment.dry_run.is_(False),
            Deployment.finished_at < before,
        )
        .order_by(Deployment.finished_at.desc(), Deployment.id.desc())
        .limit(1)
    )
    if deployment is None:
        return None
    return DeployedVersion(
        deployment_id=deployment.id,
        version=deployment.version,
        git_ref=deployment.git_ref,
        finished_at=deployment.finished_at,
    )


def history(
    session: Session,
    service: str | None = None,
    environment: str | None = None,
    limit: int = 50,
    status: DeploymentStatus | str | None = None,
) -> list[Deployment]:
    """Deployments newest first, optionally for one service, environment and/or status.

    Raises:
        ValueError: ``limit`` is not a positive integer.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit: must be a positive integer, got {limit!r}")
    query: Select[tuple[Deployment]] = select(Deployment)
    if service is not None:
        query = query.where(Deployment.service == service)
    if environment is not None:
        query = query.where(Deployment.environment == environment)
    if status is not None:
        query = query.where(Deployment.status == _status(status))
    query = query.order_by(Deployment.started_at.desc(), Deployment.id.desc()).limit(limit)
    return list(session.scalars(query))


def recent_results(session: Session, service: str, environment: str, limit: int) -> list[str]:
    """Statuses of the last ``limit`` finished real deploys that started a version (succeeded,
    rolled back or failed; aborted ones changed nothing), newest first: the change failure rate."""
    query = (
        select(Deployment.status)
        .where(
            Deployment.service == service,
            Deployment.environment == environment,
            Deployment.dry_run.is_(False),
            Deployment.status.in_(
                [
                    DeploymentStatus.SUCCEEDED,
                    DeploymentStatus.ROLLED_BACK,
                    DeploymentStatus.FAILED,
                ]
            ),
        )
        .order_by(Deployment.started_at.desc(), Deployment.id.desc())
        .limit(limit)
    )
    return [str(_status(s).value) for s in session.scalars(query)]


def past_deploys(
    session: Session, service: str, environment: str, limit: int = 500
) -> list[PastDeploy]:
    """The real deploys of ``service`` in ``environment`` that ended, newest first (by start):
    what a manual rollback chooses its version from (``deployflow.manual_rollback``)."""
    query = (
        select(Deployment)
        .where(
            Deployment.service == service,
            Deployment.environment == environment,
            Deployment.dry_run.is_(False),
            Deployment.status.notin_([DeploymentStatus.PENDING, DeploymentStatus.RUNNING]),
        )
        .order_by(Deployment.started_at.desc(), Deployment.id.desc())
        .limit(limit)
    )
    return [
        PastDeploy(r.version, r.status.value, r.strategy, r.previous_version, r.id)
        for r in session.scalars(query)
    ]


def services(session: Session, service: str | None = None) -> list[tuple[str, str]]:
    """Every (service, environment) pair with a real deploy, sorted; one service's only when
    ``service`` is given."""
    query = select(Deployment.service, Deployment.environment).where(Deployment.dry_run.is_(False))
    if service is not None:
        query = query.where(Deployment.service == service)
    pairs = session.execute(query.distinct().order_by(Deployment.service, Deployment.environment))
    return [(s, e) for s, e in pairs]


def unfinished(session: Session, service: str, environment: str) -> list[Deployment]:
    """Deployments of ``service`` in ``environment`` still marked pending or running, oldest first.

    After a crash these are the deploys whose traffic changes may need reconciling.
    """
    query = (
        select(Deployment)
        .where(
            Deployment.service == service,
            Deployment.environment == environment,
            Deployment.status.in_([DeploymentStatus.PENDING, DeploymentStatus.RUNNING]),
        )
        .order_by(Deployment.started_at, Deployment.id)
    )
    return list(session.scalars(query))


def left_with_traffic(session: Session, service: str, environment: str) -> list[Deployment]:
    """Ended deploys (not succeeded) whose canary may still have traffic, oldest first.

    A deploy records its canary weight before it moves traffic and sets it back to 0 only once the
    router confirmed the rollback; a row that ended with a weight above 0 left traffic where it may
    still be, and the next deploy must reconcile it.
    """
    query = (
        select(Deployment)
        .where(
            Deployment.service == service,
            Deployment.environment == environment,
            Deployment.status.in_(
                [DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK, DeploymentStatus.ABORTED]
            ),
            Deployment.canary_weight > 0,
            Deployment.dry_run.is_(False),
        )
        .order_by(Deployment.started_at, Deployment.id)
    )
    return list(session.scalars(query))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def stage_to_dict(stage: StageResult) -> dict[str, Any]:
    """A stage result as JSON-ready data."""
    return {
        "id": stage.id,
        "index": stage.index,
        "weight": stage.weight,
        "verdict": stage.verdict,
        "started_at": _iso(stage.started_at),
        "finished_at": _iso(stage.finished_at),
        "measurements": stage.measurements,
        "reason": stage.reason,
        "label": stage.label,
        "note": stage.note,
    }


def incident_to_dict(incident: Incident) -> dict[str, Any]:
    """An incident as JSON-ready data."""
    return {
        "id": incident.id,
        "stage": incident.stage,
        "metric": incident.metric,
        "value": incident.value,
        "threshold": incident.threshold,
        "reason": incident.reason,
        "evidence": incident.evidence,
        "created_at": _iso(incident.created_at),
    }


def check_to_dict(check: CheckResult) -> dict[str, Any]:
    """A check result as JSON-ready data."""
    return {
        "id": check.id,
        "step": check.step,
        "name": check.name,
        "status": check.status.value,
        "figure": check.figure,
        "reason": check.reason,
        "duration_seconds": check.duration_seconds,
        "details": check.details,
    }


def deployment_to_dict(deployment: Deployment, *, include_children: bool = True) -> dict[str, Any]:
    """A deployment as JSON-ready data (ISO 8601 UTC timestamps), for ``--json`` output.

    Args:
        deployment: A loaded deployment (``get_deployment`` loads the children eagerly).
        include_children: Add ``stages``, ``incidents`` and ``checks`` lists.
    """
    data: dict[str, Any] = {
        "id": deployment.id,
        "service": deployment.service,
        "environment": deployment.environment,
        "version": deployment.version,
        "previous_version": deployment.previous_version,
        "strategy": deployment.strategy,
        "status": deployment.status.value,
        "dry_run": deployment.dry_run,
        "flow_run_id": deployment.flow_run_id,
        "current_stage": deployment.current_stage,
        "canary_weight": deployment.canary_weight,
        "git_ref": deployment.git_ref,
        "started_at": _iso(deployment.started_at),
        "finished_at": _iso(deployment.finished_at),
        "commit_at": _iso(deployment.commit_at),
        "details": deployment.details,
        "summary": deployment.summary,
    }
    if include_children:
        data["stages"] = [stage_to_dict(s) for s in deployment.stages]
        data["incidents"] = [incident_to_dict(i) for i in deployment.incidents]
        data["checks"] = [check_to_dict(c) for c in deployment.checks]
        data["flag_changes"] = [
            {"flag": f.flag, "percent": f.percent, "reason": f.reason,
             "changed_at": _iso(f.changed_at)}
            for f in deployment.flag_changes
        ]  # fmt: skip
    return data
