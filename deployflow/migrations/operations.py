"""One shape for every schema change: Alembic operations and raw SQL both become ``Operation``.

Alembic operations arrive as dicts recorded by ``capture_script`` (exact nullable, defaults, types,
schema-qualified names). Raw SQL given to ``op.execute`` is parsed here with PostgreSQL's own parser
(pglast, i.e. libpg_query): every statement PostgreSQL accepts is read, and a statement it rejects
is ``unparseable``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from pglast import ast, parser
from pglast import parse_sql as pg_parse
from pglast.stream import RawStream

from deployflow.migrations.capture_script import NOT_NULL_CHECK_RE, VOLATILE_RE

# Kinds that do not change the schema: they never count as DDL for the transaction rules.
DATA_KINDS = frozenset(
    {"update", "delete", "insert", "select", "set_lock_timeout", "set", "analyze", "transaction"}
)


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
    unique: bool = False
    # (column, type) of a created table, so a later raw ALTER ... TYPE knows the old type.
    columns: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    # The value a SET lock_timeout gives, in seconds (0: no timeout); None when not a literal.
    seconds: float | None = None

    def describe(self) -> str:
        """A short human label such as ``add_column users.email``."""
        target = self.table or ""
        if self.column:
            target = f"{target}.{self.column}" if target else self.column
        return f"{self.kind} {target}".strip()


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
        if not o_args:
            return False  # unbounded to bounded: every value is checked
        # numeric(p) is numeric(p, 0): more precision at the same scale keeps every value.
        o_full, n_full = (*o_args, 0)[:2], (*n_args, 0)[:2]
        return n_full[1] == o_full[1] and n_full[0] >= o_full[0]
    return o_name == "CIDR" and n_name == "INET"


def is_identity_using(expression: str | None, column: str | None, new_type: str | None) -> bool:
    """True when a ``USING`` expression only reads the column as it is (``c``, ``c::new_type``,
    ``CAST(c AS new_type)``): the change is then what the types alone say, no conversion."""
    if not expression or not column:
        return expression is None
    try:
        [raw] = pg_parse(f"SELECT {expression}")
        node: Any = raw.stmt.targetList[0].val  # type: ignore[union-attr]
    except Exception:  # not an expression PostgreSQL parses: not shown to be an identity
        return False
    cast_type = None
    if isinstance(node, ast.TypeCast):
        cast_type, node = _type_name(node.typeName), node.arg
    if not isinstance(node, ast.ColumnRef):
        return False
    name = getattr((node.fields or (None,))[-1], "sval", None)
    if not isinstance(name, str) or name.lower() != column.lower().strip('"'):
        return False
    return cast_type is None or (
        new_type is not None and _split_type(cast_type) == _split_type(new_type)
    )


def lock_timeout_seconds(value: object) -> float | None:
    """A lock_timeout setting in seconds: an integer is milliseconds, a string may carry a
    unit (``'5s'``, ``'250ms'``, ``'1min'``); None when it cannot be read."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) / 1000
    match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?\s*$", str(value), re.I)
    if not match:
        return None
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
    return float(match.group(1)) * scale[(match.group(2) or "ms").lower()]


def _split_type(value: str) -> tuple[str, tuple[int, ...]]:
    match = re.match(r"^\s*([A-Za-z ]+?)\s*(?:\(([\d\s,]*)\))?\s*$", value)
    if not match:
        return value.strip().upper(), ()
    args = tuple(int(a) for a in (match.group(2) or "").split(",") if a.strip())
    return match.group(1).upper(), args


# ---------------------------------------------------------------------------------------------
# Raw SQL


_FIELDS = {f.name for f in fields(Operation)}


def operation_from_dict(record: dict[str, Any]) -> Operation:
    """An ``Operation`` from the dict ``capture_script`` recorded (unknown keys are ignored)."""
    values = {k: v for k, v in record.items() if k in _FIELDS}
    values["tables"] = tuple(str(t) for t in values.get("tables") or () if t)
    values["columns"] = tuple(tuple(c) for c in values.get("columns") or ())
    return Operation(**values)


def normalise_name(name: str | None) -> str | None:
    """Compare table names as PostgreSQL resolves them: case folded, ``public.`` implied.

    ``billing.users`` and ``users`` are different tables; ``public.users`` and ``users`` are the
    same one (under the default search_path).
    """
    if not name:
        return None
    parts = [p.strip('"').lower() for p in name.split(".")]
    if len(parts) > 1 and parts[-2] == "public":
        parts = parts[-1:]
    return ".".join(parts[-2:])


# ---------------------------------------------------------------------------------------------
# Raw SQL


def split_statements(text: str) -> list[str]:
    """Split SQL on semicolons outside quotes, dollar quotes and comments (PostgreSQL's scanner)."""
    try:
        tokens = parser.scan(text)
    except Exception:  # an unterminated string: hand back the whole text as one statement
        return [text.strip()] if text.strip() else []
    statements: list[str] = []
    start = 0
    for token in tokens:
        if token.name == "ASCII_59":  # ';'
            statements.append(text[start : token.start])
            start = token.end + 1
    statements.append(text[start:])
    return [s.strip() for s in statements if s.strip()]


def parse_sql(text: str) -> list[Operation]:
    """Parse raw SQL into operations; a statement PostgreSQL rejects becomes ``unparseable``."""
    result: list[Operation] = []
    for statement in split_statements(text):
        result.extend(_parse_statement(statement))
    return result


def _parse_statement(statement: str) -> list[Operation]:
    try:
        parsed = pg_parse(statement)
    except Exception as exc:  # pglast.parser.ParseError: PostgreSQL would reject it too
        return [Operation("unparseable", sql=statement, source="sql", detail=_first_line(exc))]
    result: list[Operation] = []
    for raw in parsed:
        try:
            ops = _from_node(raw.stmt, statement)
        except Exception as exc:  # an AST shape we did not expect must not crash the analysis
            ops = [Operation("unparseable", detail=f"{type(raw.stmt).__name__}: {exc}")]
        result += [replace(op, sql=statement, source="sql") for op in ops]
    return result


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _deparse(node: Any) -> str:
    try:
        return str(RawStream()(node))
    except Exception:  # a node the printer does not know: its type is still informative
        return type(node).__name__


def _relation(node: Any) -> str | None:
    if node is None:
        return None
    name = getattr(node, "relname", None)
    schema = getattr(node, "schemaname", None)
    if not name:
        return None
    return f"{schema}.{name}" if schema else str(name)


def _dotted(names: Any) -> str | None:
    parts = [getattr(n, "sval", None) for n in (names or ())]
    return ".".join(p for p in parts if p) or None


def _type_name(node: Any) -> str | None:
    return _deparse(node).upper() if node is not None else None


def _enum(value: Any) -> str:
    return str(getattr(value, "name", value))


_OTHER_STATEMENTS = (
    ast.DoStmt, ast.GrantStmt, ast.LockStmt, ast.NotifyStmt, ast.AlterOwnerStmt,
    ast.GrantRoleStmt,
)  # fmt: skip


def _from_node(node: Any, statement: str) -> list[Operation]:
    if isinstance(node, ast.AlterTableStmt):
        table = _relation(node.relation)
        if _enum(node.objtype) != "OBJECT_TABLE":
            return [Operation("ddl_object", table, detail=_enum(node.objtype))]
        return [_from_alter_cmd(cmd, table) for cmd in node.cmds or ()] or [
            Operation("other", table, detail="ALTER TABLE")
        ]
    if isinstance(node, ast.RenameStmt):
        return [_from_rename(node)]
    if isinstance(node, ast.IndexStmt):
        return [
            Operation(
                "create_index", _relation(node.relation), concurrently=bool(node.concurrent),
                constraint=node.idxname, unique=bool(node.unique),
            )
        ]  # fmt: skip
    if isinstance(node, ast.DropStmt):
        kind = _enum(node.removeType)
        targets = [
            _dotted(obj) if isinstance(obj, tuple) else getattr(obj, "sval", None)
            for obj in node.objects or ()
        ]
        cascade = _enum(node.behavior) == "DROP_CASCADE"
        if kind == "OBJECT_INDEX":
            return [
                Operation("drop_index", None, concurrently=bool(node.concurrent), constraint=t)
                for t in targets
            ]
        if kind == "OBJECT_TABLE":
            return [Operation("drop_table", t, cascade=cascade) for t in targets]
        return [Operation("ddl_object", targets[0] if targets else None, detail=f"DROP {kind}")]
    if isinstance(node, ast.CreateStmt) and _persistence(node.relation) == "temporary":
        return [Operation("create_table", _relation(node.relation), detail="temporary")]
    if isinstance(node, ast.CreateStmt):
        columns = tuple(
            (elt.colname, _type_name(elt.typeName) or "")
            for elt in node.tableElts or ()
            if isinstance(elt, ast.ColumnDef) and elt.colname
        )
        constraints = [e for e in node.tableElts or () if isinstance(e, ast.Constraint)]
        for elt in node.tableElts or ():
            if isinstance(elt, ast.ColumnDef):
                constraints += [c for c in elt.constraints or () if isinstance(c, ast.Constraint)]
        referenced = tuple(
            dict.fromkeys(
                name
                for c in constraints
                if _enum(c.contype) == "CONSTR_FOREIGN"
                for name in [_relation(c.pktable)]
                if name
            )
        )
        return [
            Operation("create_table", _relation(node.relation), columns=columns, tables=referenced)
        ]
    if isinstance(node, ast.TruncateStmt):
        tables = tuple(filter(None, (_relation(r) for r in node.relations or ())))
        cascade = _enum(node.behavior) == "DROP_CASCADE"
        return [
            Operation("truncate", tables[0] if tables else None, tables=tables, cascade=cascade)
        ]
    if isinstance(node, ast.VacuumStmt):
        options = {str(o.defname).lower() for o in node.options or ()}
        vacuumed = [_relation(r.relation) for r in node.rels or ()]
        first = vacuumed[0] if vacuumed else None
        if not node.is_vacuumcmd:
            return [Operation("analyze", first)]
        return [Operation("vacuum", first, detail="full" if "full" in options else None)]
    if isinstance(node, ast.ReindexStmt):
        params = {str(p.defname).lower() for p in node.params or ()}
        return [
            Operation(
                "reindex", _relation(node.relation) or node.name,
                concurrently="concurrently" in params,
            )
        ]  # fmt: skip
    if isinstance(node, ast.ClusterStmt):
        return [Operation("cluster", _relation(node.relation))]
    if isinstance(node, ast.VariableSetStmt):
        if str(node.name or "").lower() == "lock_timeout":
            return [Operation("set_lock_timeout", seconds=_set_value_seconds(node))]
        return [Operation("set")]
    if isinstance(node, ast.ConstraintsSetStmt):
        return [Operation("set", detail="SET CONSTRAINTS")]
    if isinstance(node, ast.SelectStmt):
        if re.search(r"set_config\s*\(\s*'lock_timeout'", statement, re.I):
            match = re.search(r"set_config\s*\(\s*'lock_timeout'\s*,\s*'([^']*)'", statement, re.I)
            return [
                Operation(
                    "set_lock_timeout",
                    seconds=lock_timeout_seconds(match.group(1)) if match else None,
                )
            ]
        into = getattr(node, "intoClause", None)
        if into is not None:  # SELECT ... INTO [TEMP] t: a new table
            return [Operation("create_table", _relation(into.rel), detail=_persistence(into.rel))]
        return [Operation("select")]
    if isinstance(node, ast.CreateTableAsStmt) and _enum(node.objtype) == "OBJECT_TABLE":
        rel = node.into.rel if node.into is not None else None
        return [Operation("create_table", _relation(rel), detail=_persistence(rel))]
    if isinstance(node, ast.UpdateStmt):
        return [Operation("update", _relation(node.relation))]
    if isinstance(node, ast.DeleteStmt):
        return [Operation("delete", _relation(node.relation))]
    if isinstance(node, ast.InsertStmt):
        return [Operation("insert", _relation(node.relation))]
    if isinstance(node, ast.CommentStmt):
        target = node.object
        name = _dotted(target) if isinstance(target, tuple) else None
        return [Operation("comment", name)]
    if isinstance(node, ast.TransactionStmt):
        return [Operation("transaction", detail=_enum(node.kind).removeprefix("TRANS_STMT_"))]
    if isinstance(node, _OTHER_STATEMENTS):
        return [Operation("other", detail=type(node).__name__)]
    # CREATE FUNCTION / TYPE / EXTENSION / VIEW / SEQUENCE / TRIGGER, ALTER TYPE, ...: objects
    # that are not a table's data or shape.
    return [Operation("ddl_object", detail=type(node).__name__)]


def _persistence(relation: Any) -> str | None:
    return "temporary" if getattr(relation, "relpersistence", None) == "t" else None


def _set_value_seconds(node: Any) -> float | None:
    if _enum(node.kind) in ("VAR_SET_DEFAULT", "VAR_RESET"):
        return 0.0  # the server's default, which is no timeout unless configured otherwise
    args: tuple[Any, ...] = tuple(node.args or ())
    if len(args) != 1 or not isinstance(args[0], ast.A_Const):
        return None
    value = args[0].val
    return lock_timeout_seconds(getattr(value, "sval", None) or getattr(value, "ival", None))


def _from_rename(node: Any) -> Operation:
    kind = _enum(node.renameType)
    table = _relation(node.relation)
    if kind == "OBJECT_TABLE":
        return Operation("rename_table", table, new_name=node.newname)
    if kind == "OBJECT_COLUMN" and _enum(node.relationType) == "OBJECT_TABLE":
        return Operation("rename_column", table, node.subname, new_name=node.newname)
    if kind == "OBJECT_TABCONSTRAINT":
        return Operation("rename_constraint", table, constraint=node.subname, new_name=node.newname)
    if kind == "OBJECT_INDEX":
        return Operation("rename_index", None, constraint=table, new_name=node.newname)
    return Operation("ddl_object", table, detail=f"RENAME {kind}")


def _from_alter_cmd(cmd: Any, table: str | None) -> Operation:
    subtype = _enum(cmd.subtype)
    if subtype == "AT_AddColumn":
        return _from_column_def(cmd.def_, table)
    if subtype == "AT_DropColumn":
        cascade = _enum(cmd.behavior) == "DROP_CASCADE"
        return Operation("drop_column", table, cmd.name, cascade=cascade)
    if subtype == "AT_AlterColumnType":
        definition = cmd.def_
        using = getattr(definition, "raw_default", None)
        return Operation(
            "alter_column_type", table, cmd.name,
            new_type=_type_name(getattr(definition, "typeName", None)),
            expression=_deparse(using) if using is not None else None,
        )  # fmt: skip
    if subtype == "AT_SetNotNull":
        return Operation("set_not_null", table, cmd.name)
    if subtype == "AT_DropNotNull":
        return Operation("drop_not_null", table, cmd.name)
    if subtype == "AT_ColumnDefault":
        return Operation("set_default", table, cmd.name, has_default=cmd.def_ is not None)
    if subtype == "AT_AddConstraint":
        return _from_constraint(cmd.def_, table)
    if subtype == "AT_ValidateConstraint":
        return Operation("validate_constraint", table, constraint=cmd.name)
    if subtype == "AT_DropConstraint":
        # The constraint type is not in the statement; naming conventions usually say it.
        name = cmd.name or ""
        is_fk = bool(re.match(r"^(fk|.*_fkey$|.*_fk$)", name, re.I))
        return Operation("drop_foreign_key" if is_fk else "drop_constraint", table, constraint=name)
    # ENABLE/DISABLE TRIGGER, SET (storage options), OWNER, ...: a lock, no data or shape change.
    return Operation("other", table, cmd.name, detail=subtype)


def _from_constraint(constraint: Any, table: str | None) -> Operation:
    contype = _enum(constraint.contype)
    name = constraint.conname
    not_valid = bool(constraint.skip_validation)
    if getattr(constraint, "indexname", None):
        return Operation("add_constraint_using_index", table, constraint=name)
    if contype == "CONSTR_FOREIGN":
        referenced = _relation(constraint.pktable)
        return Operation(
            "add_foreign_key", table, not_valid=not_valid, constraint=name,
            tables=(referenced,) if referenced else (),
        )  # fmt: skip
    if contype == "CONSTR_CHECK":
        expression = _deparse(constraint.raw_expr)
        match = NOT_NULL_CHECK_RE.match(expression)
        return Operation(
            "add_check", table, match.group(1) if match else None, not_valid=not_valid,
            constraint=name, expression=expression,
        )  # fmt: skip
    if contype == "CONSTR_UNIQUE":
        return Operation("add_unique", table, constraint=name)
    if contype == "CONSTR_PRIMARY":
        return Operation("add_primary_key", table, constraint=name)
    if contype == "CONSTR_EXCLUSION":
        return Operation("add_exclusion", table, constraint=name)
    return Operation("other", table, constraint=name, detail=contype)


def _from_column_def(column_def: Any, table: str | None) -> Operation:
    type_sql = _type_name(column_def.typeName)
    nullable = not column_def.is_not_null
    has_default, volatile = False, None
    unique = False
    for constraint in column_def.constraints or ():
        contype = _enum(constraint.contype)
        if contype in ("CONSTR_NOTNULL", "CONSTR_PRIMARY"):
            nullable = False
        if contype in ("CONSTR_PRIMARY", "CONSTR_UNIQUE"):
            unique = True
        if contype == "CONSTR_DEFAULT":
            has_default = True
            text = _deparse(constraint.raw_expr)
            if VOLATILE_RE.search(text):
                volatile = text
        elif contype in ("CONSTR_IDENTITY", "CONSTR_GENERATED"):
            has_default, volatile = True, _deparse(constraint)
    if type_sql and re.match(r"^(SMALL|BIG)?SERIAL", type_sql):
        has_default, volatile = True, f"{type_sql} (nextval)"
    return Operation(
        "add_column", table, column_def.colname, nullable=nullable, has_default=has_default,
        volatile_default=volatile, new_type=type_sql, unique=unique,
    )  # fmt: skip
