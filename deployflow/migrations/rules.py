"""The rule catalogue: every finding deployflow can report, why it matters and what to do instead.

A rule's ``effect`` says what the operation does to a busy table (blocks writes, scans, rewrites);
the impact measurement uses it to decide whether a large table turns the finding into downtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Rule:
    """One check: its id (used in suppressions and overrides), default severity and explanation."""

    id: str
    severity: Severity
    title: str
    why: str
    safe_alternative: str
    effect: str | None = None


_CATALOGUE = (
    Rule(
        "add-column-not-null-without-default", "error",
        "NOT NULL column added without a server default",
        "On a table with rows the ALTER fails (existing rows would be NULL); on an empty one it "
        "succeeds and then the old code, which does not know the column, fails on every INSERT.",
        "Add the column nullable (or with a constant server_default), backfill it, then add a "
        "CHECK (col IS NOT NULL) NOT VALID, VALIDATE it and SET NOT NULL in a later revision.",
    ),
    Rule(
        "not-null-default-dropped", "error",
        "NOT NULL column whose server default is dropped in the same range",
        "The column was added NOT NULL with a server default, which is what lets the old code "
        "(which does not name the column) keep inserting; dropping the default in the same "
        "release makes every INSERT from the old version fail with a NOT NULL violation while "
        "it still runs (a canary, a blue-green switch, a rollback).",
        "Keep the server default in this release; drop it in a later release, once no running "
        "version inserts without the column.",
    ),
    Rule(
        "add-column-volatile-default", "error",
        "Column added with a volatile default (random(), gen_random_uuid(), nextval, identity, "
        "stored generated)",
        "A default evaluated per row makes PostgreSQL rewrite the whole table under an ACCESS "
        "EXCLUSIVE lock: no reads or writes until every row is rewritten.",
        "Add the column without default (or with a constant default), set the volatile default "
        "with ALTER COLUMN SET DEFAULT (applies to new rows only), backfill existing rows in "
        "batches.",
        "rewrites the table under an ACCESS EXCLUSIVE lock",
    ),
    Rule(
        "alter-column-type", "error",
        "Column type changed",
        "Unless the new type is binary coercible (varchar(n) to a longer varchar or text, numeric "
        "to a wider precision) PostgreSQL rewrites the table and its indexes under an ACCESS "
        "EXCLUSIVE lock, and old code may write values the new type rejects.",
        "Add a new column of the new type, dual-write from the code, backfill in batches, switch "
        "reads, then drop the old column in a later release. Pass existing_type= to alter_column "
        "so a binary-coercible change can be recognised.",
        "rewrites the table under an ACCESS EXCLUSIVE lock",
    ),
    Rule(
        "set-not-null", "error",
        "SET NOT NULL on an existing column",
        "PostgreSQL scans the whole table to check for NULLs while holding an ACCESS EXCLUSIVE "
        "lock, and old code that inserts without the column starts failing.",
        "ADD CONSTRAINT ... CHECK (col IS NOT NULL) NOT VALID in one revision; in the next, "
        "VALIDATE CONSTRAINT (no write lock), then SET NOT NULL (PostgreSQL 12+ uses the "
        "validated check and skips the scan) and drop the check.",
        "scans the table under an ACCESS EXCLUSIVE lock",
    ),
    Rule(
        "add-check-constraint-without-not-valid", "error",
        "CHECK constraint added without NOT VALID",
        "Adding a validated CHECK scans the whole table while holding a lock that blocks all "
        "writes.",
        "Add it with NOT VALID (postgresql_not_valid=True), then ALTER TABLE ... VALIDATE "
        "CONSTRAINT in a later revision: validation only takes a SHARE UPDATE EXCLUSIVE lock.",
        "scans the table while blocking writes",
    ),
    Rule(
        "add-foreign-key-without-not-valid", "error",
        "FOREIGN KEY added without NOT VALID",
        "Adding a validated foreign key scans the referencing table while blocking writes on "
        "both tables.",
        "Add it with NOT VALID (postgresql_not_valid=True), then VALIDATE CONSTRAINT in a later "
        "revision.",
        "scans the table while blocking writes on both tables",
    ),
    Rule(
        "add-unique-constraint", "error",
        "UNIQUE constraint added directly",
        "The unique index behind the constraint is built while writes to the table are blocked.",
        "CREATE UNIQUE INDEX CONCURRENTLY (in an autocommit_block), then ALTER TABLE ... ADD "
        "CONSTRAINT name UNIQUE USING INDEX index_name.",
        "builds an index while blocking writes",
    ),
    Rule(
        "add-primary-key", "error",
        "PRIMARY KEY added directly",
        "The primary key index is built (and NOT NULL checked) while the table is locked.",
        "CREATE UNIQUE INDEX CONCURRENTLY (in an autocommit_block), then ALTER TABLE ... ADD "
        "CONSTRAINT name PRIMARY KEY USING INDEX index_name.",
        "builds an index while blocking writes",
    ),
    Rule(
        "create-index-non-concurrent", "error",
        "CREATE INDEX without CONCURRENTLY",
        "A plain CREATE INDEX blocks every INSERT, UPDATE and DELETE on the table until the "
        "index is built.",
        "op.create_index(..., postgresql_concurrently=True) inside "
        "`with op.get_context().autocommit_block():`.",
        "blocks writes while the index is built",
    ),
    Rule(
        "drop-index-non-concurrent", "warning",
        "DROP INDEX without CONCURRENTLY",
        "A plain DROP INDEX takes an ACCESS EXCLUSIVE lock on the table; while it waits for "
        "running queries every new query queues behind it.",
        "op.drop_index(..., postgresql_concurrently=True) inside an autocommit_block.",
        "takes an ACCESS EXCLUSIVE lock on the table",
    ),
    Rule(
        "concurrently-in-transaction", "error",
        "CONCURRENTLY (or VACUUM) inside a transaction",
        "CREATE/DROP/REINDEX ... CONCURRENTLY and VACUUM cannot run inside a transaction block: "
        "the migration fails at deploy time.",
        "Run the statement inside `with op.get_context().autocommit_block():` (and prefer "
        "transaction_per_migration=True in env.py).",
    ),
    Rule(
        "drop-column", "error",
        "Column dropped",
        "Old code still selects or writes the column (SQLAlchemy names every mapped column in "
        "its statements), so every instance running the previous release fails until it is "
        "replaced.",
        "Contract in two releases: first deploy code that no longer uses the column (remove it "
        "from the model), then drop it in a later release, stating that in an allow comment.",
    ),
    Rule(
        "drop-table", "error",
        "Table dropped",
        "Old code that still reads or writes the table fails; the data is gone and a downgrade "
        "cannot bring it back.",
        "Stop using the table in a released version first, take a backup, then drop it in a "
        "later release with an allow comment stating that.",
    ),
    Rule(
        "rename-column", "error",
        "Column renamed",
        "Old code keeps using the old name and fails as soon as the migration commits.",
        "Expand/contract: add the new column, dual-write, backfill, switch reads, and drop the "
        "old column in a later release.",
    ),
    Rule(
        "rename-table", "error",
        "Table renamed",
        "Old code keeps using the old name and fails as soon as the migration commits.",
        "Create the new table (or rename and leave a view with the old name), move the code "
        "over, and drop the old name in a later release.",
    ),
    Rule(
        "drop-foreign-key", "warning",
        "Foreign key dropped",
        "The database stops enforcing referential integrity; orphaned rows appear silently and "
        "re-adding the key later needs a full validation.",
        "Keep the key; if it must go, make sure the code enforces the relation and say so in an "
        "allow comment.",
    ),
    Rule(
        "missing-lock-timeout", "warning",
        "DDL without a lock_timeout",
        "An ALTER waiting for its lock behind a long query makes every later query on the table "
        "queue behind it: a short migration becomes an outage.",
        "op.execute(\"SET lock_timeout = '5s'\") at the start of upgrade() (or in env.py), and "
        "retry the deploy if it times out.",
    ),
    Rule(
        "lock-timeout-value", "warning",
        "lock_timeout of 0 or above the bound",
        "lock_timeout = 0 turns the timeout off, and a long one lets an ALTER waiting for its "
        "lock queue every later query on the table that long: the outage lock_timeout exists "
        "to prevent.",
        "SET lock_timeout to a few seconds (at most migrations.max_lock_timeout, 10s by "
        "default) and retry the deploy when it times out.",
    ),
    Rule(
        "backfill-in-ddl-transaction", "error",
        "Backfill UPDATE in the same transaction as DDL",
        "The UPDATE locks every row it touches and the DDL's table lock is held until the whole "
        "backfill commits, so writers wait for the entire backfill.",
        "Backfill in its own revision (or after an autocommit_block boundary), in batches.",
        "writes every row while holding the DDL lock",
    ),
    Rule(
        "raw-sql-unparseable", "error",
        "Raw SQL that cannot be parsed",
        "deployflow cannot see what the statement does, so none of the other rules can check it.",
        "Use Alembic operations, or split the SQL into plain statements; if it is right as "
        "written, add an allow comment explaining what it does.",
    ),
    Rule(
        "add-exclusion-constraint", "error",
        "Exclusion constraint added to an existing table",
        "An EXCLUDE constraint builds its index under an ACCESS EXCLUSIVE lock and cannot be "
        "added NOT VALID or USING INDEX.",
        "Create the constraint together with a new table, or enforce the rule with a trigger or "
        "in the code until a downtime window.",
        "builds an index under an ACCESS EXCLUSIVE lock",
    ),
    Rule(
        "truncate-cascade", "error",
        "TRUNCATE ... CASCADE",
        "CASCADE also empties every table with a foreign key to the truncated one, including "
        "tables the author did not think of.",
        "TRUNCATE the named tables explicitly (without CASCADE), or DELETE in batches.",
    ),
    Rule(
        "reindex-without-concurrently", "error",
        "REINDEX without CONCURRENTLY",
        "REINDEX locks out writes (and reads that use the index) until it finishes.",
        "REINDEX ... CONCURRENTLY inside an autocommit_block, or run it out of band.",
        "blocks writes while the index is rebuilt",
    ),
    Rule(
        "vacuum-full", "error",
        "VACUUM FULL",
        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock: no reads or writes "
        "until it is done.",
        "Plain VACUUM (ANALYZE) inside an autocommit_block, or pg_repack out of band.",
        "rewrites the table under an ACCESS EXCLUSIVE lock",
    ),
    Rule(
        "cluster", "error",
        "CLUSTER",
        "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock.",
        "pg_repack --order-by out of band, or run it in an approved downtime window with an "
        "allow comment.",
        "rewrites the table under an ACCESS EXCLUSIVE lock",
    ),
    # Revision graph.
    Rule(
        "graph-multiple-heads", "error",
        "Several heads",
        "With more than one head `alembic upgrade head` refuses to run and the deploy order of "
        "the branches is undefined.",
        "alembic merge heads -m 'merge', and commit the merge revision.",
    ),
    Rule(
        "graph-branch-point", "error",
        "Unmerged branch point",
        "Two revisions share the same parent and were never merged: each branch can be applied "
        "without the other.",
        "Rebase one branch (point its down_revision at the other head) or merge the branches.",
    ),
    Rule(
        "graph-gap", "error",
        "Gap in the revision chain",
        "A down_revision names a revision that is not in the directory, so the chain cannot be "
        "replayed from the base.",
        "Restore the missing revision file or fix the down_revision.",
    ),
    Rule(
        "graph-not-ancestor", "error",
        "Deployed revision is not an ancestor of the target",
        "The database is on a revision that the revisions to deploy do not descend from (it is "
        "ahead, or on another branch): upgrading would skip or repeat changes.",
        "Deploy the code matching the database, or merge the branches first.",
    ),
    # Reversibility.
    Rule(
        "downgrade-missing", "error",
        "No downgrade()",
        "Without a downgrade the automatic rollback cannot undo the schema change.",
        "Write downgrade() reversing every operation of upgrade().",
    ),
    Rule(
        "downgrade-empty", "error",
        "Empty downgrade()",
        "A downgrade made of pass, a docstring or ... silently does nothing: the rollback "
        "believes it restored the schema while the new schema stays.",
        "Write downgrade() reversing every operation of upgrade(), or raise NotImplementedError "
        "to say it is irreversible.",
    ),
    Rule(
        "downgrade-records-nothing", "error",
        "downgrade() records no operations",
        "Run offline the downgrade emitted no operation, so it does not undo the upgrade.",
        "Write downgrade() reversing every operation of upgrade().",
    ),
    Rule(
        "downgrade-irreversible", "error",
        "Irreversible revision",
        "downgrade() refuses on purpose (raise NotImplementedError, or another raise written in "
        "it): a "
        "rollback past this revision is impossible, so a bad release can only be fixed forward.",
        "Make it reversible, or set allow_irreversible: true in the spec after planning a "
        "fix-forward.",
    ),
    # Analysis limits and suppressions.
    Rule(
        "revision-unreadable", "error",
        "Revision that could not be read",
        "The revision failed to import, raised (or called exit()) while run offline, or passed "
        "its time limit, so nothing it does after that point was checked: a revision that "
        "cannot be read could drop a column unseen. An unchecked migration never passes.",
        "Make it importable offline (migrations.python / --python runs the capture with the "
        "service's interpreter, so application imports resolve), keep data migrations in their "
        "own revision, or, once reviewed by hand, suppress it with a reason: "
        "`# deployflow: allow revision-unreadable -- <why>` in the file or "
        "`migrations.unreadable: {<revision>: <why>}` in the spec.",
    ),
    Rule(
        "suppression-without-reason", "error",
        "Suppression without a reason",
        "An allow comment without `-- reason` hides a danger without telling reviewers why it "
        "is acceptable.",
        "Write `# deployflow: allow <rule-id> -- <why this is safe here>`.",
    ),
    Rule(
        "suppression-unknown-rule", "warning",
        "Suppression of an unknown rule",
        "The allow comment names a rule that does not exist, so it suppresses nothing.",
        "Use one of the rule ids listed by deployflow (see the report).",
    ),
)  # fmt: skip

RULES: dict[str, Rule] = {rule.id: rule for rule in _CATALOGUE}
