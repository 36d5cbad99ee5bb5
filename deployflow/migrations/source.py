"""What a revision file says without running it: ids, downgrade shape, allow comments.

Revision ids are read from the module's AST (they are literal assignments in every Alembic
template), so a broken or slow import never hides the graph.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

_ALLOW = re.compile(r"#\s*deployflow:\s*allow\s+([\w-]+)(?:\s*--\s*(.*\S))?")


@dataclass(frozen=True)
class Suppression:
    """An ``# deployflow: allow <rule-id> -- <reason>`` comment."""

    line: int
    rule_id: str
    reason: str | None


@dataclass
class RevisionSource:
    """The parts of a revision file deployflow reads statically."""

    path: Path
    revision: str
    down_revisions: tuple[str, ...]
    message: str
    # "ok", "missing", "empty" or "irreversible"
    downgrade: str
    suppressions: list[Suppression] = field(default_factory=list)
    # (first line, last line) of every simple statement, to map an operation to its statement.
    statements: list[tuple[int, int]] = field(default_factory=list)
    comment_lines: frozenset[int] = frozenset()

    def suppressions_for(self, line: int | None) -> list[Suppression]:
        """Allow comments that apply to the statement on ``line`` (or to the file if None).

        A comment applies to a statement when it is on one of its lines or in the block of
        comment lines directly above it.
        """
        if line is None:
            return list(self.suppressions)
        start, end = line, line
        containing = [s for s in self.statements if s[0] <= line <= s[1]]
        if containing:
            start, end = min(containing, key=lambda s: s[1] - s[0])
        while start - 1 in self.comment_lines:
            start -= 1
        return [s for s in self.suppressions if start <= s.line <= end]


class RevisionSourceError(ValueError):
    """The file is not a readable Alembic revision."""


def read_revision_source(path: Path) -> RevisionSource:
    """Parse ``path`` and return its revision metadata.

    Raises:
        RevisionSourceError: the file has a syntax error or no literal ``revision``.
    """
    text = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise RevisionSourceError(f"{path.name}: syntax error on line {exc.lineno}") from exc
    values: dict[str, object] = {}
    functions: dict[str, ast.FunctionDef] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            functions[node.name] = node
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    values[target.id] = None
    revision = values.get("revision")
    if not isinstance(revision, str) or not revision:
        raise RevisionSourceError(f"{path.name}: no literal `revision = '...'` assignment")
    down = values.get("down_revision")
    if isinstance(down, str):
        downs: tuple[str, ...] = (down,)
    elif isinstance(down, (tuple, list)):
        downs = tuple(str(d) for d in down)
    else:
        downs = ()
    lines = text.splitlines()
    comment_lines = frozenset(i for i, raw in enumerate(lines, 1) if raw.strip().startswith("#"))
    suppressions = [
        Suppression(i, m.group(1), m.group(2))
        for i, raw in enumerate(lines, 1)
        for m in [_ALLOW.search(raw)]
        if m
    ]
    compound = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With, ast.If, ast.For,
                ast.While, ast.Try)  # fmt: skip
    statements = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.stmt) and not isinstance(node, compound)
    ]
    docstring = ast.get_docstring(tree) or ""
    return RevisionSource(
        path=path, revision=revision, down_revisions=downs,
        message=docstring.strip().splitlines()[0] if docstring.strip() else "",
        downgrade=_downgrade_shape(functions.get("downgrade")),
        suppressions=suppressions, statements=statements, comment_lines=comment_lines,
    )  # fmt: skip


def _downgrade_shape(function: ast.FunctionDef | None) -> str:
    if function is None:
        return "missing"
    body = [
        stmt
        for stmt in function.body
        if not (isinstance(stmt, ast.Pass))
        and not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant))
    ]
    if not body:
        return "empty"
    for stmt in ast.walk(function):
        if isinstance(stmt, ast.Raise) and stmt.exc is not None:
            exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
            if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
                return "irreversible"
    return "ok"
