"""SQLAlchemy 2 models of the tracking database.

Every change here needs an Alembic revision in ``migrations/versions``: an integration test compares
these models with the migrated schema on SQLite and PostgreSQL and fails on any difference.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from deployflow.checks.result import CheckStatus

# Explicit constraint names make migrations reproducible: SQLite batch mode and PostgreSQL both
# need a name to drop or alter a constraint, and database-generated names differ per backend.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone type and hands back naive datetimes; PostgreSQL hands back the session's
    timezone. Both are normalised to UTC here so comparisons and JSON output never mix naive and
    aware values. Naive input is refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given: tracking timestamps must be "
                "timezone-aware (use datetime.now(UTC))"
            )
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Only SQLite gets here: what we stored was UTC with the offset dropped.
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class DeploymentStatus(StrEnum):
    """Lifecycle of one deploy."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def is_terminal(self) -> bool:
        """True once the deploy can no longer change state."""
        return self not in (DeploymentStatus.PENDING, DeploymentStatus.RUNNING)


def _enum_values(enum_class: type[StrEnum]) -> list[str]:
    # Store the lowercase values ("rolled_back"), not the member names ("ROLLED_BACK").
    return [member.value for member in enum_class]


class Base(DeclarativeBase):
    """Declarative base of the tracking models, with the naming convention in its MetaData."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


_ACTIVE_DEPLOY = "status IN ('pending', 'running') AND NOT dry_run"


class Deployment(Base):
    """One deploy of one version of one service to one environment."""

    __tablename__ = "deployments"
    __table_args__ = (
        Index(
            "ix_deployments_service_environment_started_at", "service", "environment", "started_at"
        ),
        CheckConstraint("canary_weight >= 0 AND canary_weight <= 100", name="canary_weight_range"),
        # One unfinished real deploy per service and environment (revision 0002).
        Index(
            "uq_deployments_one_active",
            "service",
            "environment",
            unique=True,
            sqlite_where=text(_ACTIVE_DEPLOY),
            postgresql_where=text(_ACTIVE_DEPLOY),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(100))
    version: Mapped[str] = mapped_column(String(200))
    previous_version: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(50))
    status: Mapped[DeploymentStatus] = mapped_column(
        Enum(
            DeploymentStatus,
            name="deployment_status",
            native_enum=False,
            create_constraint=True,
            length=32,
            values_callable=_enum_values,
            validate_strings=True,
        ),
        default=DeploymentStatus.PENDING,
    )
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    current_stage: Mapped[int | None] = mapped_column(Integer)
    canary_weight: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    git_ref: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    summary: Mapped[str | None] = mapped_column(Text)
    # Renewed by the running deploy (revision 0003); a stale one means its run is dead.
    heartbeat_at: Mapped[datetime | None]
    # When the released commit (git_ref) was made: where the lead time for changes starts
    # (revision 0005).
    commit_at: Mapped[datetime | None]
    # What the deploy decided and measured beyond its stages, for its reports (revision 0006):
    # the strategy's rationale and risk table, baselines, the verification (``record.Details``).
    details: Mapped[dict[str, Any] | None]

    stages: Mapped[list[StageResult]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(StageResult.index, StageResult.id)",
    )
    incidents: Mapped[list[Incident]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Incident.id",
    )
    checks: Mapped[list[CheckResult]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="CheckResult.id",
    )
    flag_changes: Mapped[list[FlagChange]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="FlagChange.id",
    )
    reports: Mapped[list[DeployReport]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="DeployReport.id",
    )
    schema_changes: Mapped[list[SchemaChange]] = relationship(
        back_populates="deployment",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="SchemaChange.id",
    )

    def __repr__(self) -> str:
        return (
            f"Deployment(id={self.id!r}, service={self.service!r}, "
            f"environment={self.environment!r}, version={self.version!r}, status={self.status!r})"
        )


class StageResult(Base):
    """The analysis verdict of one rollout stage (one traffic weight)."""

    __tablename__ = "stage_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Integer)
    # Free text on purpose: the analysis owns its verdict vocabulary (promote, rollback,
    # inconclusive, ...) and a new verdict must not need a schema migration.
    verdict: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    measurements: Mapped[list[Any]]
    reason: Mapped[str | None] = mapped_column(Text)
    # What the stage observed when not a canary at ``weight``, and how a promotion was reached
    # when not on evidence alone (revision 0006).
    label: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)

    deployment: Mapped[Deployment] = relationship(back_populates="stages")


class Incident(Base):
    """Why a deploy was rolled back or stopped: the metric, its value, the threshold, evidence."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[int | None] = mapped_column(Integer)
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="incidents")


class CheckResult(Base):
    """One pre-deploy or migration check and its outcome."""

    __tablename__ = "check_results"
    __table_args__ = (
        # A skipped check without a reason is how checks silently stop running.
        CheckConstraint("status <> 'skipped' OR reason IS NOT NULL", name="skipped_has_reason"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[CheckStatus] = mapped_column(
        Enum(
            CheckStatus,
            name="check_status",
            native_enum=False,
            create_constraint=True,
            length=32,
            values_callable=_enum_values,
            validate_strings=True,
        )
    )
    figure: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]]

    deployment: Mapped[Deployment] = relationship(back_populates="checks")


class FlagChange(Base):
    """A feature flag the deploy changed: the share of users who get it now, and why
    (revision 0004)."""

    __tablename__ = "flag_changes"
    __table_args__ = (CheckConstraint("percent >= 0 AND percent <= 100", name="percent_range"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    flag: Mapped[str] = mapped_column(String(200))
    percent: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="flag_changes")


class DeployReport(Base):
    """The story of a deploy after it ended (revision 0005): the incident report of a rollback or
    the summary of a success, as markdown, and its chart as PNG (the markdown names it
    ``chart.png``; ``deployflow report`` writes it beside the report file)."""

    __tablename__ = "deploy_reports"
    __table_args__ = (CheckConstraint("kind IN ('incident', 'summary')", name="kind_known"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    markdown: Mapped[str] = mapped_column(Text)
    chart_png: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    deployment: Mapped[Deployment] = relationship(back_populates="reports")


class SchemaChange(Base):
    """A schema change the deploy applied (revision 0007, ``migrations.apply``): the target
    database's Alembic revision before and after, what step 2 read of each revision (can the
    old version run with it, is it reversible), and what became of it (applied, failed, kept
    after a rollback, downgraded, left with the command to undo it)."""

    __tablename__ = "schema_changes"
    __table_args__ = (
        CheckConstraint(
            "status IN ('applied', 'failed', 'kept', 'downgraded', 'left')", name="status_known"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), index=True
    )
    revision_before: Mapped[str | None] = mapped_column(String(255))
    revision_after: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32))
    # deployflow.schema.SchemaRange.to_dict(): the revisions and their classes.
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    command: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="")
    applied_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None]

    deployment: Mapped[Deployment] = relationship(back_populates="schema_changes")
