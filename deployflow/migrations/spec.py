"""The ``migrations:`` section of the service spec: the Alembic project and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator, model_validator

from deployflow.migrations.rules import RULES
from deployflow.spec_types import Duration, StrictModel

# "off" disables a rule; the others replace the rule's default severity.
RuleSetting = Literal["error", "warning", "info", "off"]


class DowntimeWindow(StrictModel):
    """A period in which a migration that needs downtime is allowed to run."""

    start: AwareDatetime = Field(description="When the window opens (ISO 8601 with a timezone).")
    end: AwareDatetime = Field(description="When the window closes (ISO 8601 with a timezone).")
    reason: str = Field(min_length=1, description="Why downtime is acceptable in this window.")
    approved_by: str = Field(min_length=1, description="Who approved the downtime.")

    @model_validator(mode="after")
    def _end_after_start(self) -> DowntimeWindow:
        if self.end <= self.start:
            raise ValueError("downtime window 'end' must be later than 'start'")
        return self


class MigrationsApply(StrictModel):
    """The release applies its migrations (step 5), before the new version takes traffic."""

    spec_programs: ClassVar[tuple[str, ...]] = ("command", "downgrade_command")

    command: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "The team's own upgrade command, argv without a shell, '{revision}' replaced by the "
            "revision to reach, e.g. ['flask', 'db', 'upgrade', '{revision}']; run from the "
            "checkout root. Empty: Alembic's upgrade, driven in the service's interpreter "
            "(migrations.python) against migrations.database_url."
        ),
    )
    downgrade_command: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "The team's own downgrade command, '{revision}' replaced by the revision to return "
            "to. Empty: Alembic's downgrade through the service's interpreter."
        ),
    )
    downgrade_on_rollback: bool = Field(
        default=False,
        description=(
            "On a rollback, downgrade the release's revisions once traffic is back on the old "
            "version, when every one of them is reversible and the staging round trip's "
            "downgrade passed. Otherwise a range that is not expand-only is left as it is, with "
            "the command to undo it in the incident report."
        ),
    )
    timeout: Duration = Field(
        default=600.0,
        gt=0,
        description="How long the upgrade (or a downgrade) may take, e.g. '10m'.",
    )

    @field_validator("command", "downgrade_command")
    @classmethod
    def _revision_placeholder(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any("{revision}" in part for part in value):
            raise ValueError(
                "the command must name the revision to reach with '{revision}', e.g. "
                "['alembic', 'upgrade', '{revision}']"
            )
        return value


class MigrationsSpec(StrictModel):
    """How deployflow checks the service's Alembic migrations (step 2 of the deploy)."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("path",)

    path: Path = Field(
        description="The Alembic directory (the one holding env.py and versions/).",
    )
    from_revision: str | None = Field(
        default=None,
        description=(
            "The revision deployed in the target database. When empty it is read from the "
            "target's alembic_version table through database_url; without either, every "
            "revision from the base is checked."
        ),
    )
    to_revision: str | None = Field(
        default=None,
        description="The revision to deploy; empty means the single head of the revision graph.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL of the target database, used only to read alembic_version.",
    )
    staging_url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of a staging database (PostgreSQL or SQLite) for the "
            "upgrade/downgrade/upgrade round trip and the table size measurements."
        ),
    )
    lock_timeout: Duration = Field(
        default=5.0,
        description="lock_timeout set on the staging session during the round trip, e.g. '5s'.",
    )
    max_lock_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description=(
            "The longest lock_timeout a revision may set, e.g. '10s'; a longer one (or 0, "
            "which turns the timeout off) is the warning lock-timeout-value."
        ),
    )
    large_table_rows: int = Field(
        default=1_000_000,
        ge=1,
        description=(
            "A table with at least this many (estimated) rows is large: a write-blocking, "
            "scanning or rewriting operation on it requires downtime."
        ),
    )
    large_table_bytes: int = Field(
        default=1024**3,
        ge=1,
        description="A table of at least this many bytes (with indexes and TOAST) is large.",
    )
    allow_irreversible: bool = Field(
        default=False,
        description=(
            "Accept revisions whose downgrade refuses on purpose (raise NotImplementedError, or "
            "any raise written in downgrade())."
        ),
    )
    downtime_windows: list[DowntimeWindow] = Field(
        default_factory=list,
        description=(
            "Approved downtime windows; a deploy needing downtime proceeds only inside one."
        ),
    )
    python: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "The service's Python interpreter: a command on PATH, or a path (a relative one "
            "from the checkout root, else from the folder of alembic.ini), e.g. "
            "'.venv/bin/python'. The revisions are then captured, and the staging round trip "
            "run, by a process of that interpreter (Python 3.9+ with Alembic and SQLAlchemy 1.3 "
            "or later, not deployflow), so revisions that import the application resolve as in "
            "the service's own CI. An interpreter that cannot run the capture is bad input. "
            "Empty: deployflow's own interpreter, in process."
        ),
    )
    sys_path: list[str] = Field(
        default_factory=list,
        description=(
            "Folders put on sys.path while the revisions are read, relative ones from the "
            "checkout root, e.g. ['.', 'src']. Empty: alembic.ini's prepend_sys_path and the "
            "checkout root (the nearest folder above the Alembic directory holding .git, "
            "pyproject.toml, setup.py, requirements.txt, ...; for the Flask-Migrate layout the "
            "folder holding migrations/ and the application). A package directory (holding "
            "__init__.py) is refused: its modules would shadow real ones."
        ),
    )
    revision_timeout: Duration = Field(
        default=30.0,
        gt=0,
        description="How long one revision may take to import and run offline, e.g. '30s'.",
    )
    unreadable: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Revisions known not to be readable offline, each with the reason it was accepted "
            "after a review by hand: {<revision id or file name>: <reason>}. Any other revision "
            "that cannot be read is an error."
        ),
    )
    apply: MigrationsApply | None = Field(
        default=None,
        description=(
            "Set to have the release apply its migrations (step 5, before the new version takes "
            "traffic), record the schema revision before and after, refuse a canary or "
            "blue-green whose range the old version cannot run with, and settle the schema on "
            "a rollback. Needs database_url. Empty: deployflow checks migrations only."
        ),
    )
    rules: dict[str, RuleSetting] = Field(
        default_factory=dict,
        description=(
            "Per rule severity overrides, e.g. {'drop-index-non-concurrent': 'error'}; "
            "'off' disables a rule."
        ),
    )

    @model_validator(mode="after")
    def _apply_needs_the_database(self) -> MigrationsSpec:
        if self.apply is not None and self.database_url is None:
            raise ValueError(
                "migrations.apply needs migrations.database_url (the target database: its "
                "schema revision is recorded before and after the release applies migrations)"
            )
        return self

    @field_validator("unreadable")
    @classmethod
    def _reasons_given(cls, value: dict[str, str]) -> dict[str, str]:
        missing = sorted(rev for rev, reason in value.items() if not reason.strip())
        if missing:
            raise ValueError(
                f"no reason given for {', '.join(missing)}; write why the revision is accepted "
                "unread, e.g. {abc123: 'data migration, reviewed by hand in PR 42'}"
            )
        return value

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleSetting]) -> dict[str, RuleSetting]:
        unknown = sorted(set(value) - set(RULES))
        if unknown:
            raise ValueError(
                f"unknown rule id(s) {', '.join(unknown)}; known rules: {', '.join(sorted(RULES))}"
            )
        return value
