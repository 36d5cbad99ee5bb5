"""The tracking database as a deploy sees it: every write a release makes, one method each.

The flow's tasks hold a ``Ledger`` (built once per run from the tracking block or
``DEPLOYFLOW_DATABASE_URL``) instead of opening sessions themselves; each method is one short
transaction. State that must survive a crash (which stage, which weight) is written *before* the
router is told, so a restarted run can reconcile.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from deployflow.manual_rollback import PastDeploy, manual_headline
from deployflow.reconcile import RecordedRollout
from deployflow.release import ReleaseOutcome
from deployflow.rollout import StageResult
from deployflow.schema import SchemaChangeRecord
from deployflow.tracking.answers import Answers

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from deployflow.dora import DoraFigures
    from deployflow.tracking.record import DeployRecord
    from deployflow.tracking.repository import DeployedVersion

# SQLAlchemy, the models and the repository (a third of a worker's import of the deploy flow) are
# imported by the methods that use them: a run needs them once it opens its ledger, not to load
# the flow, so its first task starts sooner (tests/unit/test_import_cost.py).

_engines: dict[str, Engine] = {}
# The key of a person's request to roll back in a running deploy's ``details``.
ROLLBACK_REQUEST = "rollback_requested"
# The previous version a succeeded deploy left running (``keep_previous``) in its ``details``.
KEPT_PREVIOUS = "kept_previous"


@dataclass(frozen=True)
class KeptVersion:
    """A previous version a succeeded deploy left running until ``until``."""

    deployment_id: int
    version: str
    until: datetime


_engines_lock = threading.Lock()


class ConcurrentDeploy(RuntimeError):
    """Another real deploy of the same service and environment is unfinished."""


@dataclass(frozen=True)
class UnfinishedDeploy:
    """A deploy row still marked pending or running, or one that ended (``ended``) without
    confirming that traffic was back on the stable version."""

    deployment_id: int
    version: str
    flow_run_id: str | None
    dry_run: bool
    ended: bool = False
    heartbeat_at: datetime | None = None


@dataclass(frozen=True)
class EndedDeploy:
    """A deploy row with its outcome recorded (``status``), for the next deploy to check that
    Prefect learnt it too."""

    deployment_id: int
    version: str
    flow_run_id: str
    status: str
    dry_run: bool
    finished_at: datetime
    summary: str


def _details(outcome: ReleaseOutcome) -> dict[str, Any]:
    """What the deploy decided and measured beyond its stages, kept for its reports."""
    risk = {k: outcome.strategy_factors.get(k) for k in ("score", "level", "factors")}
    return {
        "strategy_rationale": outcome.strategy_rationale,
        "risk": risk if risk["factors"] else {},
        "baseline_p95_seconds": outcome.baseline_p95_seconds,
        "switch_seconds": outcome.switch_seconds,
        "verification": (
            [c.to_dict() for c in outcome.verification.checks] if outcome.verification else []
        ),
        "reconciled": list(outcome.reconciled),
        **(
            {KEPT_PREVIOUS: {"version": kept[0], "until": kept[1].isoformat()}}
            if (kept := outcome.kept_previous) is not None
            else {}
        ),
    }


def _add_stage(s: Session, deployment_id: int, result: StageResult) -> None:
    from deployflow.tracking import repository

    repository.add_stage_result(
        s,
        deployment_id,
        index=result.index,
        weight=result.weight,
        verdict=result.verdict.value,
        started_at=result.started_at,
        finished_at=result.finished_at,
        measurements=[m.to_dict() for m in result.measurements],
        reason=result.reason.reason if result.reason else None,
        label=result.label,
        note=result.note,
    )


class Ledger:
    """Records deploys in the tracking database.

    Args:
        engine: An engine at the head revision (``Ledger.for_url`` makes and migrates one).
    """

    def __init__(self, engine: Engine) -> None:
        from deployflow.tracking import db

        self.engine = engine
        self._sessions = db.session_factory(engine)
        # Every ledger transaction may write (and they are short): each takes the write lock first.
        self._writes = db.writing_session_factory(engine)
        self.answers = Answers()

    @classmethod
    def for_url(cls, url: str | None = None) -> Ledger:
        """The ledger of ``url`` (default ``DEPLOYFLOW_DATABASE_URL`` or the local SQLite file),
        migrated to head once per process."""
        from deployflow.tracking import db

        url = url or db.database_url()
        with _engines_lock:
            if url not in _engines:
                engine = db.make_engine(url)
                try:
                    db.upgrade(engine)
                except BaseException:
                    engine.dispose()
                    raise
                _engines[url] = engine
            return cls(_engines[url])

    def describe(self) -> str:
        from deployflow.tracking import db

        return f"tracking database {db.mask_url(self.engine.url)}"

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._noting_answers(), self._writes() as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A read-only session (no write lock). Its failure starts or extends the database's
        silence like a write's; its success does not end it: a database that answers reads but
        takes no writes (SQLite on a full disk) still keeps the deploy from renewing its lease
        and recording what it does."""
        with self._noting_answers(ends_silence=False), self._sessions() as s:
            yield s

    @contextmanager
    def _noting_answers(self, *, ends_silence: bool = True) -> Iterator[None]:
        """Note whether the database answered (``answers``): a query it did not take starts or
        extends its silence; a transaction it took (``ends_silence``) ends it."""
        from deployflow.tracking.answers import unanswered

        try:
            yield
        except Exception as exc:
            if unanswered(exc):
                self.answers.failed(exc)
            raise
        if ends_silence:
            self.answers.answered()

    def stopped_answering(self, grace: float) -> str | None:
        """Why a running deploy must stop, once every query of this process has failed for
        ``grace`` seconds (``deployflow.tracking.answers``); None while it answers."""
        return self.answers.stopped(grace)

    def start(self, outcome: ReleaseOutcome) -> int:
        """Create the deployment row of ``outcome`` before anything is touched.

        Raises:
            ConcurrentDeploy: Another real deploy of this service and environment is unfinished
                (the partial unique index decided it, even for two runs started in one instant).
        """
        from sqlalchemy.exc import IntegrityError

        from deployflow.tracking import repository
        from deployflow.tracking.models import DeploymentStatus

        try:
            with self._session() as s:
                row = repository.create_deployment(
                    s,
                    service=outcome.service,
                    environment=outcome.environment,
                    version=outcome.version,
                    strategy=outcome.strategy,
                    previous_version=outcome.previous_version,
                    dry_run=outcome.dry_run,
                    git_ref=outcome.git_ref,
                    flow_run_id=outcome.flow_run_id,
                    status=DeploymentStatus.RUNNING,
                    commit_at=outcome.commit_at,
                    started_at=outcome.started_at,
                )
                row.heartbeat_at = datetime.now(UTC)  # alive from its first moment
                return row.id
        except IntegrityError:
            raise ConcurrentDeploy(
                f"another deploy of {outcome.service} to {outcome.environment} started at the "
                "same time"
            ) from None

    def unfinished(
        self, service: str, environment: str, *, except_flow_run: str | None = None
    ) -> list[UnfinishedDeploy]:
        """Deploys of this service and environment still pending or running, and ended ones that
        left traffic unsettled, oldest first. A read: it takes no write lock, so a deploy
        stopped inside a write (Ctrl-Z on SQLite) does not keep others from asking."""
        from deployflow.tracking import repository

        with self._read() as s:
            running = [
                UnfinishedDeploy(
                    r.id, r.version, r.flow_run_id, r.dry_run, heartbeat_at=r.heartbeat_at
                )
                for r in repository.unfinished(s, service, environment)
                if r.flow_run_id is None or r.flow_run_id != except_flow_run
            ]
            ended = [
                UnfinishedDeploy(r.id, r.version, r.flow_run_id, r.dry_run, ended=True)
                for r in repository.left_with_traffic(s, service, environment)
            ]
            return ended + running

    def close(self, deployment_id: int, status: str, summary: str) -> None:
        """End a row another run left unfinished; traffic has been settled."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.update_deployment(
                s, deployment_id, status=status, summary=summary, canary_weight=0
            )

    def last_ended(
        self, service: str, environment: str, *, limit: int, except_flow_run: str | None = None
    ) -> list[EndedDeploy]:
        """Of the last ``limit`` deploys of this service and environment (by start, newest
        first), those that ended with a flow run recorded."""
        from deployflow.tracking import repository

        with self._read() as s:
            return [
                EndedDeploy(
                    r.id,
                    r.version,
                    r.flow_run_id,
                    r.status.value,
                    r.dry_run,
                    r.finished_at,
                    r.summary or "",
                )
                for r in repository.history(s, service, environment, limit=limit)
                if r.finished_at is not None and r.flow_run_id and r.flow_run_id != except_flow_run
            ]

    def recorded_rollout(self, deployment_id: int) -> RecordedRollout:
        """What the row holds of its rollout (its stages' weights and verdicts, the last weight
        written), for the next deploy to judge what a dead one had done."""
        from deployflow.tracking import repository

        with self._read() as s:
            row = repository.get_deployment(s, deployment_id)
            return RecordedRollout(
                tuple((stage.weight, stage.verdict) for stage in row.stages), row.canary_weight
            )

    def settled(self, deployment_id: int, summary: str) -> None:
        """An ended row whose traffic the next run settled: keep its status, clear the weight."""
        from deployflow.tracking import repository

        with self._session() as s:
            row = repository.get_deployment(s, deployment_id)
            repository.update_deployment(
                s, deployment_id, canary_weight=0, summary=f"{row.summary or ''}; {summary}"
            )

    def renew(self, deployment_id: int, seconds: float | None = None) -> bool:
        """The deploy's run is alive now (its lease; see ``deployflow.tracking.lease``). With
        ``seconds``, only a lease still held is renewed: a row another run closed, or whose
        heartbeat is older than ``seconds``, is not revived. Returns whether it was renewed."""
        from deployflow.tracking import repository

        with self._session() as s:
            if seconds is not None and not self._holds(s, deployment_id, seconds):
                return False
            repository.update_deployment(s, deployment_id, heartbeat_at=datetime.now(UTC))
            return True

    def holds_lease(self, deployment_id: int, seconds: float) -> bool:
        """Whether the deploy still holds its lease: its row is running and its heartbeat is
        younger than ``seconds`` (the fencing check before an action, ``deployflow.fencing``)."""
        with self._read() as s:
            return self._holds(s, deployment_id, seconds)

    @staticmethod
    def _holds(s: Session, deployment_id: int, seconds: float) -> bool:
        from deployflow.tracking import repository
        from deployflow.tracking.lease import lease_alive
        from deployflow.tracking.models import DeploymentStatus

        row = repository.get_deployment(s, deployment_id)
        running = row.status in (DeploymentStatus.PENDING, DeploymentStatus.RUNNING)
        return running and lease_alive(row.heartbeat_at, datetime.now(UTC), seconds)

    def traffic_restored(self, deployment_id: int) -> None:
        """The router confirmed all traffic is back on the stable version."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.update_deployment(s, deployment_id, canary_weight=0)

    def deployed(self, service: str, environment: str) -> DeployedVersion | None:
        """The version (and git ref) the last successful real deploy left running."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.last_successful(s, service, environment)

    def past_deploys(self, service: str, environment: str) -> list[PastDeploy]:
        """The real deploys that ended, newest first (what a manual rollback chooses from)."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.past_deploys(s, service, environment)

    def request_rollback(self, deployment_id: int, requested_by: str, reason: str) -> bool:
        """Ask the running deploy ``deployment_id`` to roll back at its next look (a person's
        rollback started while it runs). False when the row already ended: there is nothing to
        ask. Kept in the row's ``details`` until the deploy records its outcome there."""
        from deployflow.tracking import repository

        with self._session() as s:
            row = repository.get_deployment(s, deployment_id)
            if row.status.is_terminal:
                return False
            asked = {"requested_by": requested_by, "reason": reason,
                     "at": datetime.now(UTC).isoformat()}  # fmt: skip
            repository.update_deployment(
                s, deployment_id, details={**(row.details or {}), ROLLBACK_REQUEST: asked}
            )
            return True

    def rollback_requested(self, deployment_id: int) -> str | None:
        """Why a person asked this running deploy to roll back (``request_rollback``), or None."""
        from deployflow.tracking import repository

        with self._read() as s:  # a read: no write lock
            details = repository.get_deployment(s, deployment_id).details or {}
        asked = details.get(ROLLBACK_REQUEST)
        if not isinstance(asked, dict):
            return None
        return manual_headline(str(asked.get("requested_by")), str(asked.get("reason") or ""))

    def kept_versions(self, service: str, environment: str) -> list[KeptVersion]:
        """Previous versions succeeded deploys left running and nobody has stopped yet."""
        from deployflow.tracking import repository

        found: list[KeptVersion] = []
        with self._session() as s:
            for row in repository.history(s, service, environment, limit=50, status="succeeded"):
                kept = (row.details or {}).get(KEPT_PREVIOUS)
                if isinstance(kept, dict) and not kept.get("stopped_at"):
                    until = datetime.fromisoformat(str(kept["until"]))
                    found.append(KeptVersion(row.id, str(kept["version"]), until))
        return found

    def keep_previous_until(self, deployment_id: int, until: datetime) -> str | None:
        """The version before ``deployment_id`` (its ``previous_version``), recorded as kept
        until ``until``, as a success with ``keep_previous`` records it: the retire step stops it
        then unless it serves traffic. For a dead deploy the reconciler closed as succeeded,
        whose own run never got to stop it. Returns that version, None when the row has none or
        already records one kept."""
        from deployflow.tracking import repository

        with self._session() as s:
            row = repository.get_deployment(s, deployment_id)
            details = dict(row.details or {})
            previous = row.previous_version
            if not previous or previous == row.version or KEPT_PREVIOUS in details:
                return None
            details[KEPT_PREVIOUS] = {"version": previous, "until": until.isoformat()}
            repository.update_deployment(s, deployment_id, details=details)
            return previous

    def kept_version_stopped(self, deployment_id: int, note: str) -> None:
        """The version ``deployment_id`` kept is no longer running (stopped, or live again)."""
        from deployflow.tracking import repository

        with self._session() as s:
            row = repository.get_deployment(s, deployment_id)
            details = dict(row.details or {})
            kept = dict(details.get(KEPT_PREVIOUS) or {})
            kept.update(stopped_at=datetime.now(UTC).isoformat(), note=note)
            details[KEPT_PREVIOUS] = kept
            repository.update_deployment(s, deployment_id, details=details)

    def status_of(self, deployment_id: int) -> str:
        """The row's status now (``running`` until it ends)."""
        from deployflow.tracking import repository

        with self._read() as s:
            return repository.get_deployment(s, deployment_id).status.value

    def recent_results(self, service: str, environment: str, limit: int) -> list[str]:
        """Statuses of the last ``limit`` real deploys that started a version, newest first."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.recent_results(s, service, environment, limit)

    def set_strategy(self, deployment_id: int, strategy: str) -> None:
        from deployflow.tracking import repository

        with self._session() as s:
            repository.update_deployment(s, deployment_id, strategy=strategy)

    def traffic_moving(self, deployment_id: int, *, stage: int | None, weight: int) -> None:
        """Write where traffic is about to be, before the router is told."""
        from deployflow.tracking import repository

        fields: dict[str, object] = {"canary_weight": weight}
        if stage is not None:
            fields["current_stage"] = stage
        with self._session() as s:
            repository.update_deployment(s, deployment_id, **fields)

    def flag_changed(self, deployment_id: int, flag: str, percent: int, reason: str) -> None:
        """A feature flag the deploy changed (written right after the flag file was replaced)."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.add_flag_change(s, deployment_id, flag=flag, percent=percent, reason=reason)

    def stage_observed(self, deployment_id: int, result: StageResult) -> None:
        with self._session() as s:
            _add_stage(s, deployment_id, result)

    def stage_verdict_changed(self, deployment_id: int, result: StageResult) -> None:
        """The stage ``result`` ended with another verdict than the one recorded (a gate)."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.set_stage_verdict(
                s,
                deployment_id,
                index=result.index,
                verdict=result.verdict.value,
                reason=result.reason.reason if result.reason else None,
            )

    def record_outcome(self, outcome: ReleaseOutcome, summary: str) -> bool:
        """The end of a deploy, in one transaction: status, summary, every check, the incident.

        Only on a row still open: a row another run already closed (the reconciler of a deploy
        that lost its lease, paused past it) keeps that run's record, which says what happened
        to the traffic; this one is not written over it. Returns whether it was written.
        """
        from deployflow.tracking import repository
        from deployflow.tracking.models import Deployment, DeploymentStatus

        if outcome.deployment_id is None:
            return False
        with self._session() as s:
            row = s.get(Deployment, outcome.deployment_id, with_for_update=True)
            if row is not None and DeploymentStatus(row.status).is_terminal:
                return False
            restored = outcome.rollback is not None and outcome.rollback.error is None
            repository.update_deployment(
                s,
                outcome.deployment_id,
                status=outcome.status,
                finished_at=datetime.now(UTC),
                summary=summary,
                details=_details(outcome),
                # The rollback's own write of it may have met a database that did not answer.
                **({"canary_weight": 0} if restored else {}),
            )
            # Stages the database did not take as they ended (it was not answering then).
            kept = {st.index for st in repository.get_deployment(s, outcome.deployment_id).stages}
            for stage in outcome.stages:
                if stage.index not in kept:
                    _add_stage(s, outcome.deployment_id, stage)
            for c in outcome.checks:
                repository.add_check_result(
                    s,
                    outcome.deployment_id,
                    step=c.step,
                    name=c.name,
                    status=c.status,
                    figure=c.figure or None,
                    reason=c.reason or (c.detail if c.status.value == "skipped" else None),
                    duration_seconds=c.duration_seconds,
                    details=dict(c.details) or {"detail": c.detail},
                )
            if outcome.rollback is not None:
                r = outcome.rollback
                repository.add_incident(
                    s,
                    outcome.deployment_id,
                    stage=r.trigger.stage,
                    metric=r.trigger.metric,
                    value=r.trigger.value,
                    threshold=r.trigger.threshold,
                    reason=r.trigger.reason,
                    evidence={
                        **r.evidence.to_dict(),
                        "weight": r.trigger.weight,
                        "headline": r.trigger.headline,
                        "requests": r.trigger.requests,
                        "verified": r.verified,
                        "error": r.error,
                        "restore_seconds": r.restore_seconds,
                        "verification": (
                            [c.to_dict() for c in r.verification.checks] if r.verification else []
                        ),
                    },
                )
        return True

    def schema_applied(
        self,
        deployment_id: int,
        *,
        before: str | None,
        after: str | None,
        ok: bool,
        schema: Mapping[str, Any],
        command: str,
        detail: str = "",
    ) -> int:
        """The release applied its migrations (or tried to): returns the change's id."""
        from deployflow.tracking import repository

        with self._session() as s:
            change = repository.add_schema_change(
                s, deployment_id, before=before, after=after,
                status="applied" if ok else "failed", schema=schema, command=command,
                detail=detail,
            )  # fmt: skip
            return change.id

    def schema_settled(self, change_id: int, status: str, detail: str, after: str | None) -> None:
        """What became of the schema change after a rollback: kept, downgraded or left."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.settle_schema_change(s, change_id, status=status, detail=detail, after=after)

    def schema_history(self, service: str, environment: str) -> list[SchemaChangeRecord]:
        """Schema changes applied by releases, oldest first (``deployflow.schema``)."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.schema_history(s, service, environment)

    def record(self, deployment_id: int) -> DeployRecord:
        """One deploy as its reports are written from it (``deployflow.tracking.record``)."""
        from deployflow.tracking import repository
        from deployflow.tracking.record import record_of

        with self._session() as s:
            return record_of(repository.get_deployment(s, deployment_id))

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        """One deploy with its stages, incidents, checks and flag changes, as data (what its
        report is written from)."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.deployment_to_dict(repository.get_deployment(s, deployment_id))

    def save_report(
        self, deployment_id: int, kind: str, markdown: str, chart_png: bytes | None
    ) -> None:
        """Keep the incident report or success summary of a deploy (one of each per deploy)."""
        from deployflow.tracking import repository

        with self._session() as s:
            repository.save_report(
                s, deployment_id, kind=kind, markdown=markdown, chart_png=chart_png
            )

    def released_before(
        self, service: str, environment: str, before: datetime
    ) -> DeployedVersion | None:
        """The deploy whose version ran before one that started at ``before``."""
        from deployflow.tracking import repository

        with self._session() as s:
            return repository.released_before(s, service, environment, before)

    def dora(
        self,
        since: datetime,
        until: datetime,
        *,
        service: str | None = None,
        environment: str | None = None,
    ) -> list[DoraFigures]:
        """The DORA figures of the deploys that finished between ``since`` and ``until``."""
        from deployflow import dora

        with self._session() as s:
            return dora.compute(s, since, until, service=service, environment=environment)
