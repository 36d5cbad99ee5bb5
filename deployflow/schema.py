"""What a release does to the database schema, and what the old version can run with.

Pure decisions over what step 2 read and what the tracking database recorded (no Alembic, no
database here):

- ``traffic_split_refusal``: a canary or blue-green runs the old and the new version side by side
  on the new schema, so a range holding a revision the old version cannot run with is refused
  before anything starts or any traffic moves.
- ``after_rollback``: once traffic is back on the old version, what becomes of the schema the
  release applied (kept, downgraded, or left with the command to run).
- ``can_run_with_schema``: can version X run with the schema as the releases since X left it
  (for a manual rollback to X).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Can the version before the release run on a database with this revision applied?
OldVersion = Literal["runs", "breaks", "unknown"]
Action = Literal["keep", "downgrade", "leave"]


@dataclass(frozen=True)
class RevisionClass:
    """One revision of a release's range as step 2 read it."""

    revision: str
    old_version: OldVersion
    reversibility: str
    reasons: tuple[str, ...] = ()

    @property
    def reversible(self) -> bool:
        """Known to be undoable (read fully, its downgrade recorded or run on staging)."""
        return self.reversibility.startswith("reversible")

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "old_version": self.old_version,
            "reversibility": self.reversibility,
            "reasons": list(self.reasons),
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> RevisionClass:
        old = str(data.get("old_version") or "unknown")
        return cls(
            str(data["revision"]),
            old if old in ("runs", "breaks") else "unknown",  # type: ignore[arg-type]
            str(data.get("reversibility") or "unknown"),
            tuple(str(r) for r in data.get("reasons") or ()),
        )


@dataclass(frozen=True)
class SchemaRange:
    """The revisions a release brings (parents first), and whether the staging round trip's
    downgrade passed over them (None: not run)."""

    from_revision: str | None
    to_revision: str | None
    revisions: tuple[RevisionClass, ...] = ()
    staging_downgrade_ok: bool | None = None

    @property
    def expand_only(self) -> bool:
        """Every revision was read and the old version runs with it."""
        return all(r.old_version == "runs" for r in self.revisions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_revision": self.from_revision,
            "to_revision": self.to_revision,
            "revisions": [r.to_dict() for r in self.revisions],
            "staging_downgrade_ok": self.staging_downgrade_ok,
        }

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> SchemaRange:
        ok = data.get("staging_downgrade_ok")
        return cls(
            data.get("from_revision"),
            data.get("to_revision"),
            tuple(RevisionClass.of(r) for r in data.get("revisions") or ()),
            ok if isinstance(ok, bool) else None,
        )


def traffic_split_refusal(schema: SchemaRange, strategy: str) -> str | None:
    """Why a release whose migrations are applied before its traffic moves must not run the old
    and the new version side by side (canary, blue-green); None when it may.

    A revision the old version breaks on, or one not fully read (nobody knows), refuses it: from
    the first canary request to the end of a rollback the old version serves on the new schema.
    """
    if strategy not in ("canary", "blue-green") or schema.expand_only:
        return None
    breaking = [r for r in schema.revisions if r.old_version == "breaks"]
    unknown = [r for r in schema.revisions if r.old_version == "unknown"]
    parts = []
    if breaking:
        parts.append(
            "contract change(s) the old version cannot run with: "
            + "; ".join(f"{r.revision} ({', '.join(r.reasons) or 'contract'})" for r in breaking)
        )
    if unknown:
        parts.append(
            "revision(s) not fully read, so whether the old version runs with them is not known: "
            + ", ".join(r.revision for r in unknown)
        )
    return (
        f"refused before anything started or any traffic moved: a {strategy} runs the old and "
        f"the new version side by side on the migrated schema, and the range holds "
        + "; and ".join(parts)
        + ". Split expand and contract: release the expand part (new columns and tables, the "
        "code that no longer needs what is removed) first, and the contract part (drops, "
        "renames, NOT NULL) in a later release once no running version depends on the old "
        "shape; or release this one with strategy: direct"
    )


@dataclass(frozen=True)
class MigrationRun:
    """One upgrade or downgrade of the service's database (``deployflow.migrations.apply``)."""

    ok: bool
    before: str | None
    after: str | None
    detail: str
    seconds: float
    command: str  # what ran, for people (no secret: the URL is never in it)


@dataclass(frozen=True)
class SchemaDecision:
    """What becomes of the schema after a rollback, in words for the report and the thread."""

    action: Action
    message: str
    command: str | None = None
    downgrade_to: str | None = None


def after_rollback(
    schema: SchemaRange,
    *,
    applied_from: str | None,
    applied_to: str | None,
    old_version: str,
    traffic_back: bool,
    downgrade_allowed: bool,
    downgrade_command: str,
) -> SchemaDecision:
    """What to do with the schema a release applied, once it is rolled back.

    Never a downgrade unless traffic is back on the old version (``traffic_back``). An
    expand-only range stays: the old version runs on it. A range the spec allows to downgrade
    (``downgrade_allowed``), every revision reversible and the staging round trip's downgrade
    passed: downgraded to where it was. Anything else is left as it is, with the exact state and
    ``downgrade_command`` (the command that would undo it) in the message.
    """
    state = (
        f"the database is at {applied_to or 'no revision'} (it was at "
        f"{applied_from or 'no revision'} before the release)"
    )
    if applied_from == applied_to:
        return SchemaDecision("keep", f"the release changed no schema revision: {state}")
    if not traffic_back:
        return SchemaDecision(
            "leave",
            f"traffic is not back on {old_version}, so the schema was not touched: {state}. "
            f"Once {old_version} serves all the traffic, undo it if it must go with "
            f"`{downgrade_command}`",
            downgrade_command,
        )
    if schema.expand_only:
        return SchemaDecision(
            "keep",
            f"the schema stays applied: {state}; every revision of the release is an expand "
            f"change {old_version} runs with",
        )
    reversible = bool(schema.revisions) and all(r.reversible for r in schema.revisions)
    if downgrade_allowed and reversible and schema.staging_downgrade_ok:
        return SchemaDecision(
            "downgrade",
            f"downgraded to {applied_from or 'base'} after traffic was back on "
            f"{old_version} (reversible, and its downgrade passed on staging)",
            downgrade_command,
            applied_from or "base",
        )
    why = []
    breaking = [r.revision for r in schema.revisions if r.old_version != "runs"]
    if breaking:
        why.append(f"{', '.join(breaking)} may not let {old_version} run (contract or unread)")
    if not downgrade_allowed:
        why.append("the spec does not allow a downgrade (migrations.apply.downgrade_on_rollback)")
    else:
        unsure = [r.revision for r in schema.revisions if not r.reversible]
        if unsure:
            why.append(f"{', '.join(unsure)} not known to be reversible")
        if not schema.staging_downgrade_ok:
            why.append("its downgrade was not shown to pass on staging")
    return SchemaDecision(
        "leave",
        f"the schema was left as it is: {state}; " + "; ".join(why) + ". To undo it, a person "
        f"decides and runs `{downgrade_command}`",
        downgrade_command,
    )


@dataclass(frozen=True)
class SchemaChangeRecord:
    """A schema change a release applied, as the tracking database keeps it."""

    deployment_id: int
    version: str
    previous_version: str | None
    revision_before: str | None
    revision_after: str | None
    status: str  # applied, failed, kept, downgraded, left
    schema: SchemaRange = field(default_factory=lambda: SchemaRange(None, None))
    applied_at: datetime | None = None


@dataclass(frozen=True)
class SchemaVerdict:
    """Whether a version can run with the current schema: True, False, or None (not known)."""

    ok: bool | None
    reason: str


def can_run_with_schema(version: str, history: Sequence[SchemaChangeRecord]) -> SchemaVerdict:
    """Can ``version`` run with the schema as the releases recorded in ``history`` (one service
    and environment, oldest first) left it?

    The changes that count are those applied after ``version`` was last released (or, when it
    never applied one, all of them) and still in place (not downgraded, not failed before
    changing anything). ``version`` runs when each of them is expand-only; a contract change
    (or a revision nobody read fully) says no (or not known), naming the release and revision.
    """
    last_own = max(
        (i for i, change in enumerate(history) if change.version == version), default=None
    )
    since = history[last_own + 1 :] if last_own is not None else list(history)
    in_place = [
        c
        for c in since
        if c.status != "downgraded" and c.revision_after not in (None, c.revision_before)
    ]
    if not in_place:
        return SchemaVerdict(True, f"no schema change was applied after {version}")
    breaking = []
    unknown = []
    for change in in_place:
        for revision in change.schema.revisions:
            where = f"{revision.revision} (applied by {change.version})"
            if revision.old_version == "breaks":
                breaking.append(where + f": {', '.join(revision.reasons) or 'contract change'}")
            elif revision.old_version == "unknown":
                unknown.append(where)
        if not change.schema.revisions:
            unknown.append(f"{change.revision_after} (applied by {change.version}, not read)")
    now = in_place[-1].revision_after
    if breaking:
        return SchemaVerdict(
            False,
            f"{version} cannot run with the schema at {now}: " + "; ".join(breaking),
        )
    if unknown:
        return SchemaVerdict(
            None,
            f"not known whether {version} runs with the schema at {now}: "
            + ", ".join(unknown)
            + " not fully read",
        )
    return SchemaVerdict(True, f"{version} runs with the schema at {now}: expand changes only")
