"""One shape for every schema change: Alembic operations and raw SQL both become ``Operation``.

Alembic operations are read from their objects (exact nullable, defaults, types); raw SQL given to
``op.execute`` is parsed with sqlglot (PostgreSQL dialect). Statements sqlglot only recognises as an
opaque command (REINDEX, VACUUM, CLUSTER, VALIDATE CONSTRAINT, ... USING INDEX) are classified by
their leading keywords, which is all these statements need.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

import sqlglot
from alembic.ddl.postgresql import CreateExcludeConstraintOp
from alembic.operations import ops as alembic_ops
from sqlalchemy import Column, Computed, Identity
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ClauseElement, TextClause
from sqlalchemy.types import TypeEngine
from sqlglot import exp

# sqlglot logs a warning for every statement it falls back to parsing as a Command; those are
# classified here, so the noise is not useful to the user.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

_PG = postgresql.dialect()  # type: ignore[no-untyped-call]

VOLATILE_FUNCTIONS = frozenset(
    {
        "random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
        "uuid_generate_v4", "uuid_generate_v7", "uuidv4", "uuidv7", "clock_timestamp",
        "timeofday", "nextval", "setseed", "txid_current",
    }
)  # fmt: skip
_VOLATILE_RE = re.compile(r"\b(" + "|".join(sorted(VOLATILE_FUNCTIONS)) + r")\s*\(", re.I)
_NOT_NULL_CHECK_RE = re.compile(r'^\s*\(?\s*"?(\w+)"?\s+IS\s+NOT\s+NULL\s*\)?\s*$', re.I)

# Kinds that do not change the schema: they never count as DDL for the transaction rules.
DATA_KINDS = frozenset({"update", "delete", "insert", "select", "set_lock_timeout", "set"})


@dataclass(frozen=True)
class Operation:
    """A schema or data change recorded from a revision, in the order it runs."""

    kind: str
    table: str | None = None
    column: str | None = None
    sql: str = ""
    line: int | None = None
    in_transaction: bool = True
    # Transactions are split by autocommit blocks; operations with the same segment commit together.
    segment: int = 0
    source: str = "alembic"
    concurrently: bool = False
    not_valid: bool = False
    cascade: bool = False
    nullable: bool | None = None
    has_default: bool = False
    volatile_default: str | None = None
    old_type: str | None = None
    new_type: str | None = None
    new_name: str | None = None
    constraint: str | None = None
    expression: str | None = None
    tables: tuple[str, ...] = field(default_factory=tuple)
    detail: str | None = None

    def describe(self) -> str:
        """A short human label such as ``add_column users.email``."""
        target = self.table or ""
        if self.column:
            target = f"{target}.{self.column}" if target else self.column
        return f"{self.kind} {target}".strip()


def _render(clause: Any) -> str:
    if isinstance(clause, str):
        return clause
    if isinstance(clause, TextClause):
        return clause.text
    if isinstance(clause, ClauseElement):
        try:
            return str(clause.compile(dialect=_PG, compile_kwargs={"literal_binds": True}))
        except Exception:  # literal rendering is not possible for every bound type
            return str(clause.compile(dialect=_PG))
    return str(clause)


def render_type(type_: Any) -> str | None:
    """The PostgreSQL spelling of a SQLAlchemy type, e.g. ``VARCHAR(200)``; None when unknown."""
    if type_ is None:
        return None
    if isinstance(type_, type):
        type_ = type_()
    if isinstance(type_, TypeEngine):
        try:
            return str(type_.compile(dialect=_PG)).upper()
        except Exception:  # a custom type without a PostgreSQL rendering
            return type(type_).__name__.upper()
    return str(type_).upper()


def is_binary_coercible(old: str | None, new: str | None) -> bool:
    """True when PostgreSQL changes ``old`` to ``new`` without rewriting the table.

    Only the well-known cases are accepted: widening varchar/varbit/numeric, varchar to text,
    text to unbounded varchar, and no change at all. Anything else (or an unknown old type) is
    treated as a rewrite because it cannot be proven otherwise.
    """
    if not old or not new:
        return False
    o_name, o_args = _split_type(old)
    n_name, n_args = _split_type(new)
    if (o_name, o_args) == (n_name, n_args):
        return True
    textual = {"VARCHAR", "CHARACTER VARYING", "TEXT"}
    if o_name in textual and n_name in {"TEXT"}:
        return True
    if o_name in textual and n_name in {"VARCHAR", "CHARACTER VARYING"}:
        if not n_args:
            return True
        return o_name != "TEXT" and bool(o_args) and n_args[0] >= o_args[0]
    if o_name == n_name == "VARBIT" or o_name == n_name == "BIT VARYING":
        return not n_args or (bool(o_args) and n_args[0] >= o_args[0])
    if o_name in {"NUMERIC", "DECIMAL"} and n_name in {"NUMERIC", "DECIMAL"}:
        if not n_args:
            return True
        if len(o_args) == 2 and len(n_args) == 2:
            return n_args[1] == o_args[1] and n_args[0] >= o_args[0]
        return False
    return o_name == "CIDR" and n_name == "INET"


def _split_type(value: str) -> tuple[str, tuple[int, ...]]:
    match = re.match(r"^\s*([A-Za-z ]+?)\s*(?:\(([\d\s,]*)\))?\s*$", value)
    if not match:
        return value.strip().upper(), ()
    args = tuple(int(a) for a in (match.group(2) or "").split(",") if a.strip())
    return match.group(1).upper(), args


def _column_default(column: Column[Any]) -> tuple[bool, str | None]:
    """(has a server-side value for existing rows, the volatile expression if any)."""
    if column.identity is not None or isinstance(column.server_default, Identity):
        return True, "GENERATED AS IDENTITY"
    if column.computed is not None or isinstance(column.server_default, Computed):
        computed = column.computed
        if computed is None or computed.persisted is not False:
            return True, "GENERATED ALWAYS AS (...) STORED"
        return True, None
    default = column.server_default
    if default is None:
        return False, None
    text = _render(getattr(default, "arg", default))
    match = _VOLATILE_RE.search(text)
    return True, (text if match else None)


def from_alembic(operation: Any, *, sql: str = "") -> list[Operation]:
    """Translate one Alembic ``MigrateOperation`` into zero or more ``Operation`` records.

    ``ExecuteSQLOp`` is parsed as SQL; unknown operation classes become an ``other`` record so a
    new Alembic operation never crashes the analysis.
    """
    o = alembic_ops
    if isinstance(operation, o.ExecuteSQLOp):
        return parse_sql(_render(operation.sqltext))
    if isinstance(operation, o.AddColumnOp):
        column = operation.column
        has_default, volatile = _column_default(column)
        return [
            Operation(
                "add_column", operation.table_name, column.name, sql,
                nullable=bool(column.nullable) and column.primary_key is not True,
                has_default=has_default, volatile_default=volatile,
                new_type=render_type(column.type),
            )
        ]  # fmt: skip
    if isinstance(operation, o.DropColumnOp):
        return [Operation("drop_column", operation.table_name, operation.column_name, sql)]
    if isinstance(operation, o.AlterColumnOp):
        return _from_alter_column(operation, sql)
    if isinstance(operation, o.CreateTableOp):
        return [Operation("create_table", operation.table_name, sql=sql)]
    if isinstance(operation, o.DropTableOp):
        return [Operation("drop_table", operation.table_name, sql=sql)]
    if isinstance(operation, o.RenameTableOp):
        return [Operation("rename_table", operation.table_name, new_name=operation.new_table_name)]
    if isinstance(operation, o.CreateIndexOp):
        kw = operation.kw or {}
        return [
            Operation(
                "create_index", operation.table_name, sql=sql,
                concurrently=bool(kw.get("postgresql_concurrently")),
                constraint=_str(operation.index_name),
            )
        ]  # fmt: skip
    if isinstance(operation, o.DropIndexOp):
        kw = operation.kw or {}
        return [
            Operation(
                "drop_index", operation.table_name, sql=sql,
                concurrently=bool(kw.get("postgresql_concurrently")),
                constraint=_str(operation.index_name),
            )
        ]  # fmt: skip
    if isinstance(operation, CreateExcludeConstraintOp):
        return [Operation("add_exclusion", operation.table_name, sql=sql)]
    if isinstance(operation, o.CreateForeignKeyOp):
        kw = operation.kw or {}
        return [
            Operation(
                "add_foreign_key", operation.source_table, sql=sql,
                not_valid=bool(kw.get("postgresql_not_valid")),
                constraint=_str(operation.constraint_name),
                tables=(operation.referent_table,),
            )
        ]  # fmt: skip
    if isinstance(operation, o.CreateCheckConstraintOp):
        kw = operation.kw or {}
        condition = _render(operation.condition)
        return [
            Operation(
                "add_check", operation.table_name, sql=sql,
                not_valid=bool(kw.get("postgresql_not_valid")),
                constraint=_str(operation.constraint_name), expression=condition,
                column=_not_null_check_column(condition),
            )
        ]  # fmt: skip
    if isinstance(operation, o.CreateUniqueConstraintOp):
        return [
            Operation(
                "add_unique",
                operation.table_name,
                sql=sql,
                constraint=_str(operation.constraint_name),
            )
        ]
    if isinstance(operation, o.CreatePrimaryKeyOp):
        return [
            Operation(
                "add_primary_key", operation.table_name, sql=sql,
                constraint=_str(operation.constraint_name),
            )
        ]  # fmt: skip
    if isinstance(operation, o.DropConstraintOp):
        kind = (
            "drop_foreign_key" if operation.constraint_type == "foreignkey" else "drop_constraint"
        )
        return [
            Operation(
                kind, operation.table_name, sql=sql, constraint=_str(operation.constraint_name)
            )
        ]
    if isinstance(operation, o.BulkInsertOp):
        return [Operation("insert", operation.table.name, sql=sql)]
    if isinstance(operation, (o.CreateTableCommentOp, o.DropTableCommentOp)):
        return [Operation("comment", operation.table_name, sql=sql)]
    table = getattr(operation, "table_name", None)
    return [
        Operation(
            "other", table if isinstance(table, str) else None, sql=sql,
            detail=type(operation).__name__,
        )
    ]  # fmt: skip


def _from_alter_column(operation: alembic_ops.AlterColumnOp, sql: str) -> list[Operation]:
    table, column = operation.table_name, operation.column_name
    result: list[Operation] = []
    if operation.modify_type is not None:
        result.append(
            Operation(
                "alter_column_type", table, column, sql,
                old_type=render_type(operation.existing_type),
                new_type=render_type(operation.modify_type),
            )
        )  # fmt: skip
    if operation.modify_nullable is False and operation.existing_nullable is not False:
        result.append(Operation("set_not_null", table, column, sql))
    elif operation.modify_nullable is True:
        result.append(Operation("drop_not_null", table, column, sql))
    if operation.modify_server_default is not False:
        default = operation.modify_server_default
        result.append(Operation("set_default", table, column, sql, has_default=default is not None))
    if operation.modify_name is not None:
        result.append(
            Operation("rename_column", table, column, sql, new_name=operation.modify_name)
        )
    if operation.modify_comment is not False:
        result.append(Operation("comment", table, column, sql))
    return result or [Operation("other", table, column, sql, detail="alter_column")]


def _str(value: object) -> str | None:
    # Alembic types constraint names as str | _NoneName | None; only real strings are names.
    return value if isinstance(value, str) else None


def _not_null_check_column(condition: str) -> str | None:
    match = _NOT_NULL_CHECK_RE.match(condition)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------
# Raw SQL


def split_statements(text: str) -> list[str]:
    """Split SQL on semicolons outside quotes and comments (sqlglot's tokenizer knows them)."""
    try:
        tokens = sqlglot.tokenize(text, read="postgres")
    except Exception:  # an unterminated string: hand back the whole text as one statement
        return [text.strip()] if text.strip() else []
    statements: list[str] = []
    start = 0
    for token in tokens:
        if token.token_type == sqlglot.TokenType.SEMICOLON:
            statements.append(text[start : token.start])
            start = token.end + 1
    statements.append(text[start:])
    return [s.strip() for s in statements if s.strip()]


_COMMAND_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^REINDEX\b", re.I), "reindex"),
    (re.compile(r"^VACUUM\b", re.I), "vacuum"),
    (re.compile(r"^CLUSTER\b", re.I), "cluster"),
    (re.compile(r"^ALTER\s+TABLE\b.*\bVALIDATE\s+CONSTRAINT\b", re.I | re.S),
     "validate_constraint"),
    (re.compile(r"^ALTER\s+TABLE\b.*\bUSING\s+INDEX\b", re.I | re.S),
     "add_constraint_using_index"),
    (re.compile(r"^(CREATE|DROP)\s+(EXTENSION|TYPE|FUNCTION|TRIGGER|SEQUENCE|SCHEMA|VIEW)", re.I),
     "ddl_object"),
    (re.compile(r"^CREATE\s+OR\s+REPLACE\s+(FUNCTION|VIEW|TRIGGER)", re.I), "ddl_object"),
    (re.compile(r"^ALTER\s+(TYPE|SEQUENCE|FUNCTION|SCHEMA|EXTENSION)\b", re.I), "ddl_object"),
    (re.compile(r"^(GRANT|REVOKE|ANALYZE|NOTIFY|LOCK\s+TABLE|DO\b)", re.I), "other"),
)  # fmt: skip
_TABLE_AFTER = re.compile(
    r"^(?:ALTER\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?|REINDEX\s+\(?[^)]*\)?\s*(?:TABLE|INDEX)"
    r"(?:\s+CONCURRENTLY)?|VACUUM(?:\s*\([^)]*\))?(?:\s+FULL|\s+ANALYZE|\s+VERBOSE|\s+FREEZE)*"
    r"|CLUSTER(?:\s+VERBOSE)?)\s+([\w.\"]+)",
    re.I,
)


def parse_sql(text: str) -> list[Operation]:
    """Parse raw SQL into operations; a statement that cannot be parsed becomes ``unparseable``."""
    result: list[Operation] = []
    for statement in split_statements(text):
        result.extend(_parse_statement(statement))
    return result


def _parse_statement(statement: str) -> list[Operation]:
    for pattern, kind in _COMMAND_PATTERNS:
        if pattern.search(statement):
            return [_from_command(kind, statement)]
    try:
        parsed = sqlglot.parse_one(statement, read="postgres")
    except Exception as exc:  # sqlglot raises ParseError, TokenError and a few others
        return [Operation("unparseable", sql=statement, source="sql", detail=_first_line(exc))]
    try:
        if not isinstance(parsed, exp.Expression):
            raise TypeError(f"unexpected parse result {type(parsed).__name__}")
        return [replace(op, sql=statement, source="sql") for op in _from_expression(parsed)]
    except Exception as exc:  # an AST shape we did not expect must not crash the analysis
        return [Operation("unparseable", sql=statement, source="sql", detail=_first_line(exc))]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _from_command(kind: str, statement: str) -> Operation:
    match = _TABLE_AFTER.match(statement.strip())
    table = match.group(1).replace('"', "") if match else None
    upper = statement.upper()
    if kind == "vacuum":
        full = bool(re.match(r"^VACUUM\s*(\(([^)]*\bFULL\b[^)]*)\)|\bFULL\b)", upper))
        return Operation(
            "vacuum", table, sql=statement, source="sql", detail="full" if full else None
        )
    if kind == "reindex":
        return Operation(
            "reindex", table, sql=statement, source="sql", concurrently="CONCURRENTLY" in upper
        )
    if kind == "validate_constraint":
        name = re.search(r"VALIDATE\s+CONSTRAINT\s+\"?(\w+)", statement, re.I)
        return Operation(
            kind, table, sql=statement, source="sql", constraint=name.group(1) if name else None
        )
    return Operation(kind, table, sql=statement, source="sql")


def _name(node: exp.Expression | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, exp.Table):
        parts = [p for p in (node.args.get("db"), node.args.get("this")) if p is not None]
        return ".".join(p.name for p in parts) or None
    if isinstance(node, exp.Schema):
        return _name(node.this)
    return node.name or None


def _drop_target(node: exp.Expression) -> str | None:
    # sqlglot keeps DROP targets in "tables" (a list, even for one column or constraint).
    targets = node.args.get("tables") or ([node.this] if node.this is not None else [])
    return _name(targets[0]) if targets else None


def _from_expression(node: exp.Expression) -> list[Operation]:
    if isinstance(node, exp.Alter):
        table = _name(node.this)
        actions = node.args.get("actions") or []
        return [
            _from_alter_action(action, table, not_valid=bool(node.args.get("not_valid")))
            for action in actions
        ] or [Operation("other", table, detail="ALTER")]
    if isinstance(node, exp.Create):
        kind = (node.args.get("kind") or "").upper()
        if kind == "INDEX":
            index = node.this
            table = _name(index.args.get("table")) if isinstance(index, exp.Index) else None
            return [
                Operation(
                    "create_index", table, concurrently=bool(node.args.get("concurrently")),
                    constraint=_name(index.this) if isinstance(index, exp.Index) else None,
                )
            ]  # fmt: skip
        if kind == "TABLE":
            return [Operation("create_table", _name(node.this))]
        return [Operation("ddl_object", _name(node.this), detail=kind)]
    if isinstance(node, exp.Drop):
        kind = (node.args.get("kind") or "").upper()
        target = _drop_target(node)
        if kind == "INDEX":
            concurrently = bool(node.args.get("concurrently"))
            return [Operation("drop_index", None, concurrently=concurrently, constraint=target)]
        if kind == "TABLE":
            return [Operation("drop_table", target, cascade=bool(node.args.get("cascade")))]
        return [Operation("ddl_object", target, detail=f"DROP {kind}")]
    if isinstance(node, exp.TruncateTable):
        tables = tuple(filter(None, (_name(t) for t in node.expressions)))
        cascade = str(node.args.get("option") or "").upper() == "CASCADE"
        return [
            Operation("truncate", tables[0] if tables else None, tables=tables, cascade=cascade)
        ]
    if isinstance(node, exp.Update):
        return [Operation("update", _name(node.this))]
    if isinstance(node, exp.Delete):
        return [Operation("delete", _name(node.this))]
    if isinstance(node, exp.Insert):
        target = node.this
        return [
            Operation("insert", _name(target.this if isinstance(target, exp.Schema) else target))
        ]
    if isinstance(node, exp.Set):
        if "lock_timeout" in node.sql(dialect="postgres").lower():
            return [Operation("set_lock_timeout")]
        return [Operation("set")]
    if isinstance(node, exp.Select):
        if re.search(r"set_config\s*\(\s*'lock_timeout'", node.sql(dialect="postgres"), re.I):
            return [Operation("set_lock_timeout")]
        return [Operation("select")]
    if isinstance(node, exp.Comment):
        return [Operation("comment", _name(node.this))]
    if isinstance(node, exp.Command):
        return [Operation("unparseable", detail=f"unrecognised statement {node.name.upper()}")]
    return [Operation("other", detail=type(node).__name__)]


def _from_alter_action(action: exp.Expression, table: str | None, *, not_valid: bool) -> Operation:
    if isinstance(action, exp.ColumnDef):
        return _from_column_def(action, table)
    if isinstance(action, exp.AlterColumn):
        column = action.name
        if action.args.get("dtype") is not None:
            return Operation(
                "alter_column_type", table, column,
                new_type=action.args["dtype"].sql(dialect="postgres").upper(),
            )  # fmt: skip
        if action.args.get("allow_null") is False:
            return Operation("set_not_null", table, column)
        if action.args.get("allow_null") is True:
            return Operation("drop_not_null", table, column)
        if "default" in action.args and action.args.get("default") is not None:
            return Operation("set_default", table, column, has_default=True)
        return Operation("other", table, column, detail="ALTER COLUMN")
    if isinstance(action, exp.Drop):
        kind = (action.args.get("kind") or "").upper()
        target = _drop_target(action)
        if kind == "CONSTRAINT":
            # The constraint type is not in the statement; naming conventions usually say it.
            is_fk = bool(target and re.match(r"^(fk|.*_fkey$|.*_fk$)", target, re.I))
            kind = "drop_foreign_key" if is_fk else "drop_constraint"
            return Operation(kind, table, constraint=target)
        return Operation("drop_column", table, target)
    if isinstance(action, exp.RenameColumn):
        return Operation(
            "rename_column", table, _name(action.this), new_name=_name(action.args.get("to"))
        )
    if isinstance(action, exp.AlterRename):
        return Operation("rename_table", table, new_name=_name(action.this))
    if isinstance(action, exp.AddConstraint):
        return _from_add_constraint(action, table, not_valid=not_valid)
    return Operation("other", table, detail=type(action).__name__)


def _from_column_def(column_def: exp.ColumnDef, table: str | None) -> Operation:
    kind = column_def.args.get("kind")
    type_sql = kind.sql(dialect="postgres").upper() if kind is not None else None
    nullable, has_default, volatile = True, False, None
    for constraint in column_def.args.get("constraints") or []:
        inner = constraint.args.get("kind")
        not_null = isinstance(inner, exp.NotNullColumnConstraint) and not inner.args.get(
            "allow_null"
        )
        if not_null or isinstance(inner, exp.PrimaryKeyColumnConstraint):
            nullable = False
        elif isinstance(inner, exp.DefaultColumnConstraint):
            has_default = True
            text = inner.this.sql(dialect="postgres") if inner.this is not None else ""
            if _VOLATILE_RE.search(text):
                volatile = text
        elif isinstance(
            inner, (exp.GeneratedAsIdentityColumnConstraint, exp.ComputedColumnConstraint)
        ):
            has_default, volatile = True, inner.sql(dialect="postgres")
    if type_sql and re.match(r"^(SMALL|BIG)?SERIAL", type_sql):
        has_default, volatile = True, f"{type_sql} (nextval)"
    return Operation(
        "add_column", table, column_def.name, nullable=nullable, has_default=has_default,
        volatile_default=volatile, new_type=type_sql,
    )  # fmt: skip


def _from_add_constraint(
    action: exp.AddConstraint, table: str | None, *, not_valid: bool
) -> Operation:
    for item in action.expressions:
        name = item.name if isinstance(item, exp.Constraint) else None
        kinds = item.expressions if isinstance(item, exp.Constraint) else [item]
        for kind in kinds:
            if isinstance(kind, exp.ForeignKey):
                reference = kind.args.get("reference")
                referenced = _name(reference.this) if reference is not None else None
                return Operation(
                    "add_foreign_key", table, not_valid=not_valid, constraint=name,
                    tables=(referenced,) if referenced else (),
                )  # fmt: skip
            if isinstance(kind, exp.CheckColumnConstraint):
                expression = kind.this.sql(dialect="postgres") if kind.this is not None else ""
                return Operation(
                    "add_check", table, _not_null_check_column(expression), not_valid=not_valid,
                    constraint=name, expression=expression,
                )  # fmt: skip
            if isinstance(kind, exp.UniqueColumnConstraint):
                return Operation("add_unique", table, constraint=name)
            if isinstance(kind, (exp.PrimaryKey, exp.PrimaryKeyColumnConstraint)):
                return Operation("add_primary_key", table, constraint=name)
            if isinstance(kind, exp.ExcludeColumnConstraint):
                return Operation("add_exclusion", table, constraint=name)
    return Operation("other", table, detail="ADD CONSTRAINT")
