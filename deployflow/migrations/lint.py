"""Apply the rules to the operations of one revision, in order.

State carried through a revision: tables it created (operations on them are exempt from the lock
rules, the table is empty and unused), CHECK (col IS NOT NULL) constraints added and validated (so
the safe SET NOT NULL recipe is recognised), and whether a lock_timeout was set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from deployflow.migrations.operations import (
    DATA_KINDS,
    Operation,
    is_binary_coercible,
    is_identity_using,
    normalise_name,
)

# Operations that take a strong lock on an existing table: they need a lock_timeout.
_LOCKING_KINDS = frozenset(
    {
        "add_column", "drop_column", "alter_column_type", "set_not_null", "drop_not_null",
        "set_default", "rename_column", "rename_table", "drop_table", "add_check",
        "add_foreign_key", "add_unique", "add_primary_key", "add_exclusion",
        "add_constraint_using_index", "drop_constraint", "drop_foreign_key", "truncate",
        "cluster", "other", "rename_constraint",
    }
)  # fmt: skip


def _takes_strong_lock(op: Operation) -> bool:
    if op.kind in _LOCKING_KINDS:
        return True
    if op.kind in {"create_index", "drop_index", "reindex"}:
        return not op.concurrently
    return op.kind == "vacuum" and op.detail == "full"


@dataclass(frozen=True)
class RawFinding:
    """A rule that fired on an operation (or on the whole revision when ``operation`` is None)."""

    rule_id: str
    message: str
    operation: Operation | None = None

    @property
    def table(self) -> str | None:
        """The table the finding is about, if any."""
        return self.operation.table if self.operation else None


@dataclass
class LintState:
    """What earlier revisions in the range established: validated NOT NULL checks, and the
    column types they created (so a raw ``ALTER COLUMN ... TYPE`` can be compared)."""

    validated_not_null: set[tuple[str | None, str]] = field(default_factory=set)
    column_types: dict[tuple[str | None, str], str] = field(default_factory=dict)
    # NOT NULL columns added to existing tables with a server default: the default is what lets
    # the old code, which does not know the column, keep inserting.
    not_null_defaults: set[tuple[str | None, str]] = field(default_factory=set)


_norm = normalise_name


# A lock_timeout above this many seconds lets a waiting ALTER queue queries that long.
DEFAULT_MAX_LOCK_TIMEOUT = 10.0


def lint_operations(
    operations: Iterable[Operation],
    *,
    state: LintState,
    env_sets_lock_timeout: bool,
    max_lock_timeout: float = DEFAULT_MAX_LOCK_TIMEOUT,
) -> list[RawFinding]:
    """Return the findings for one revision's upgrade operations."""
    ops = list(operations)
    findings: list[RawFinding] = []
    created: set[str | None] = set()
    pending_checks: dict[str | None, tuple[str | None, str]] = {}
    # NOT VALID constraints added by this revision on existing tables: name -> (rule, segment).
    not_valid_added: dict[str, tuple[str, int]] = {}
    lock_timeout_set = env_sets_lock_timeout
    lock_timeout_reported = False
    # DDL on a table this revision creates locks nobody out; only DDL on existing tables counts.
    new_tables = {_norm(op.table) for op in ops if op.kind == "create_table"}
    ddl_segments = {
        op.segment
        for op in ops
        if op.kind not in DATA_KINDS and op.kind != "comment" and _norm(op.table) not in new_tables
    }

    def add(rule_id: str, op: Operation, message: str) -> None:
        findings.append(RawFinding(rule_id, message, op))

    for op in ops:
        table = _norm(op.table)
        new_table = table is not None and table in created
        kind = op.kind
        if kind == "create_table":
            created.add(table)
            existing = [t for t in op.tables if _norm(t) not in created]
            if existing and not lock_timeout_set and not lock_timeout_reported:
                # Its foreign keys take a SHARE ROW EXCLUSIVE lock on the referenced tables.
                lock_timeout_reported = True
                add(
                    "missing-lock-timeout", op,
                    f"{op.describe()} references {', '.join(existing)} (locked against writes) "
                    "before any SET lock_timeout",
                )  # fmt: skip
            for column, type_ in op.columns:
                state.column_types[(table, column.lower())] = type_
            continue
        if op.column and op.new_type and kind in {"add_column", "alter_column_type"}:
            old_type = state.column_types.get((table, op.column.lower()))
            state.column_types[(table, op.column.lower())] = op.new_type
            if kind == "alter_column_type" and op.old_type is None:
                op = replace(op, old_type=old_type)
        if kind == "set_lock_timeout":
            if op.seconds == 0:
                add(
                    "lock-timeout-value", op,
                    "SET lock_timeout to 0 turns the timeout off: an ALTER waiting for its lock "
                    "queues every later query on the table for as long as it waits",
                )  # fmt: skip
                lock_timeout_set = False
                continue
            if op.seconds is not None and op.seconds > max_lock_timeout:
                add(
                    "lock-timeout-value", op,
                    f"SET lock_timeout to {op.seconds:g}s, above {max_lock_timeout:g}s "
                    "(migrations.max_lock_timeout): queries may queue that long behind a "
                    "waiting ALTER",
                )  # fmt: skip
            lock_timeout_set = True
            continue
        if (
            not lock_timeout_set
            and not lock_timeout_reported
            and not new_table
            and _takes_strong_lock(op)
        ):
            lock_timeout_reported = True
            add("missing-lock-timeout", op, f"{op.describe()} runs before any SET lock_timeout")
        if kind == "add_column" and not new_table:
            if op.nullable is False and op.has_default and op.column:
                state.not_null_defaults.add((table, op.column.lower()))
            if op.nullable is False and not op.has_default:
                add(
                    "add-column-not-null-without-default", op,
                    f"{op.table}.{op.column} is NOT NULL and has no server default",
                )  # fmt: skip
            if op.volatile_default:
                add(
                    "add-column-volatile-default", op,
                    f"{op.table}.{op.column} defaults to {op.volatile_default}",
                )  # fmt: skip
            if op.unique:
                add(
                    "add-unique-constraint", op,
                    f"{op.table}.{op.column} is added UNIQUE (its index is built under the lock)",
                )  # fmt: skip
        elif kind == "set_default" and not op.has_default and not new_table:
            if (table, (op.column or "").lower()) in state.not_null_defaults:
                add(
                    "not-null-default-dropped", op,
                    f"{op.table}.{op.column} was added NOT NULL with a server default in this "
                    "range and the default is dropped: every INSERT from the old code, which "
                    "does not name the column, fails",
                )  # fmt: skip
        elif kind == "alter_column_type" and not new_table:
            conversion = not is_identity_using(op.expression, op.column, op.new_type)
            if conversion or not is_binary_coercible(op.old_type, op.new_type):
                old = op.old_type or "unknown type (pass existing_type=)"
                add(
                    "alter-column-type", op,
                    f"{op.table}.{op.column}: {old} to {op.new_type} is not binary coercible",
                )  # fmt: skip
        elif kind == "set_not_null" and not new_table:
            if (table, (op.column or "").lower()) not in state.validated_not_null:
                add("set-not-null", op, f"{op.table}.{op.column} SET NOT NULL scans the table")
        elif kind == "add_check":
            if op.not_valid and not new_table:
                not_valid_added[(op.constraint or "").lower()] = (
                    "add-check-constraint-without-not-valid", op.segment,
                )  # fmt: skip
            if op.column:
                pending_checks[(op.constraint or "").lower()] = (table, op.column.lower())
                if not op.not_valid or new_table:
                    state.validated_not_null.add((table, op.column.lower()))
            if not op.not_valid and not new_table:
                add(
                    "add-check-constraint-without-not-valid", op,
                    f"CHECK {op.constraint or ''} on {op.table} is validated immediately",
                )  # fmt: skip
        elif kind == "validate_constraint":
            name = (op.constraint or "").lower()
            checked = pending_checks.get(name)
            if checked:
                state.validated_not_null.add(checked)
            added = not_valid_added.get(name)
            if added and added[1] == op.segment and op.in_transaction:
                # The ADD's ACCESS EXCLUSIVE lock is still held: the scan runs under it.
                add(
                    added[0], op,
                    f"{op.constraint} is validated in the transaction that added it NOT VALID",
                )  # fmt: skip
        elif kind == "add_foreign_key" and op.not_valid and not new_table:
            not_valid_added[(op.constraint or "").lower()] = (
                "add-foreign-key-without-not-valid", op.segment,
            )  # fmt: skip
        elif kind == "add_foreign_key" and not op.not_valid and not new_table:
            add(
                "add-foreign-key-without-not-valid", op,
                f"FOREIGN KEY {op.constraint or ''} on {op.table} is validated immediately",
            )  # fmt: skip
        elif kind == "add_unique" and not new_table:
            add("add-unique-constraint", op, f"UNIQUE {op.constraint or ''} on {op.table}")
        elif kind == "add_primary_key" and not new_table:
            add("add-primary-key", op, f"PRIMARY KEY {op.constraint or ''} on {op.table}")
        elif kind == "add_exclusion" and not new_table:
            add("add-exclusion-constraint", op, f"EXCLUDE constraint on {op.table}")
        elif kind in {"create_index", "drop_index"}:
            if op.concurrently and op.in_transaction:
                add(
                    "concurrently-in-transaction", op,
                    f"{op.describe()} CONCURRENTLY runs inside the migration's transaction",
                )  # fmt: skip
            elif not op.concurrently and not new_table:
                rule = f"{kind.replace('_', '-')}-non-concurrent"
                name = op.constraint or op.detail or ""
                add(rule, op, f"{op.describe()} {name} without CONCURRENTLY")
        elif kind == "reindex":
            if op.concurrently and op.in_transaction:
                add("concurrently-in-transaction", op, "REINDEX CONCURRENTLY inside a transaction")
            elif not op.concurrently:
                add("reindex-without-concurrently", op, f"REINDEX {op.table or ''} blocks writes")
        elif kind == "vacuum":
            if op.detail == "full":
                add("vacuum-full", op, f"VACUUM FULL {op.table or ''} rewrites the table")
            elif op.in_transaction:
                add("concurrently-in-transaction", op, "VACUUM inside a transaction fails")
        elif kind == "cluster":
            add("cluster", op, f"CLUSTER {op.table or ''} rewrites the table")
        elif kind == "drop_column" and not new_table:
            add("drop-column", op, f"{op.table}.{op.column} is dropped")
        elif kind == "drop_table" and not new_table:
            add("drop-table", op, f"table {op.table} is dropped")
        elif kind == "rename_column" and not new_table:
            add("rename-column", op, f"{op.table}.{op.column} renamed to {op.new_name}")
        elif kind == "rename_table" and not new_table:
            add("rename-table", op, f"table {op.table} renamed to {op.new_name}")
        elif kind == "drop_foreign_key" and not new_table:
            add("drop-foreign-key", op, f"foreign key {op.constraint or ''} on {op.table} dropped")
        elif kind == "truncate" and op.cascade:
            add("truncate-cascade", op, f"TRUNCATE {', '.join(op.tables)} CASCADE")
        elif kind == "unparseable":
            add("raw-sql-unparseable", op, f"cannot parse: {op.detail or op.sql[:80]}")
        elif kind == "update" and op.segment in ddl_segments and table not in created:
            add(
                "backfill-in-ddl-transaction", op,
                f"UPDATE {op.table} runs in the same transaction as DDL",
            )  # fmt: skip
    return findings
