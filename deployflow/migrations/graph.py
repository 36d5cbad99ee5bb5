"""The revision graph of an Alembic directory: heads, branch points, gaps, the range to check."""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from deployflow.migrations.source import RevisionSource, RevisionSourceError, read_revision_source


class MigrationInputError(ValueError):
    """Bad input to the analysis; ``argument`` names what was wrong (for the CLI's message)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument


@dataclass(frozen=True)
class GraphProblem:
    """A structural problem in the revision graph."""

    rule_id: str
    message: str
    revision: str | None = None


@dataclass
class RevisionGraph:
    """Revisions keyed by id, with their parents and children."""

    revisions: dict[str, RevisionSource]
    unreadable: dict[str, str] = field(default_factory=dict)

    def children(self) -> dict[str, list[str]]:
        """Child revision ids of every revision."""
        result: dict[str, list[str]] = {rev: [] for rev in self.revisions}
        for rev, source in self.revisions.items():
            for down in source.down_revisions:
                if down in result:
                    result[down].append(rev)
        return result

    def heads(self) -> list[str]:
        """Revisions nothing descends from."""
        return sorted(rev for rev, kids in self.children().items() if not kids)

    def ancestors(self, revision: str) -> set[str]:
        """``revision`` and everything it descends from (present in the directory)."""
        seen: set[str] = set()
        stack = [revision]
        while stack:
            rev = stack.pop()
            if rev in seen or rev not in self.revisions:
                continue
            seen.add(rev)
            stack.extend(self.revisions[rev].down_revisions)
        return seen

    def problems(self) -> list[GraphProblem]:
        """Several heads, unmerged branch points, gaps and unreadable files."""
        found = [
            GraphProblem("revision-unreadable", f"{name}: {why}", name)
            for name, why in self.unreadable.items()
        ]
        heads = self.heads()
        if len(heads) > 1:
            found.append(GraphProblem("graph-multiple-heads", f"heads: {', '.join(heads)}"))
        head_ancestry = {head: self.ancestors(head) for head in heads}
        for rev, kids in sorted(self.children().items()):
            if len(kids) < 2:
                continue
            # Merged when one head descends from every child; otherwise the branches diverge.
            merged = any(all(kid in anc for kid in kids) for anc in head_ancestry.values())
            if not merged:
                found.append(
                    GraphProblem(
                        "graph-branch-point",
                        f"{rev} has unmerged children {', '.join(sorted(kids))}",
                        rev,
                    )
                )
        for rev, source in sorted(self.revisions.items()):
            for down in source.down_revisions:
                if down not in self.revisions:
                    found.append(
                        GraphProblem(
                            "graph-gap", f"{rev} names down_revision {down}, which is missing", rev
                        )
                    )
        return found

    def ordered_range(self, from_rev: str | None, to_revs: list[str]) -> list[str]:
        """Revisions after ``from_rev`` up to ``to_revs``, parents before children."""
        wanted: set[str] = set()
        for to_rev in to_revs:
            wanted |= self.ancestors(to_rev)
        if from_rev is not None:
            wanted -= self.ancestors(from_rev)
        order: list[str] = []
        done: set[str] = set()

        def visit(rev: str) -> None:
            if rev in done or rev not in wanted:
                return
            done.add(rev)
            for down in self.revisions[rev].down_revisions:
                visit(down)
            order.append(rev)

        for rev in sorted(wanted):
            visit(rev)
        return order


# Files that mark the top of a checkout (where a team runs `alembic`, `flask db` or its tests).
_CHECKOUT_MARKERS = (
    ".git", "pyproject.toml", "setup.py", "setup.cfg", "requirements.txt", "Pipfile",
    "poetry.lock", "uv.lock", "tox.ini",
)  # fmt: skip


def project_root(alembic_dir: Path) -> Path:
    """The service's checkout root: where its application package is importable from.

    The nearest folder at or above the Alembic directory holding a checkout marker (``.git``,
    ``pyproject.toml``, ``setup.py``, ``requirements.txt``, ...): the Flask-Migrate layout keeps
    alembic.ini in ``migrations/`` while the application sits beside that folder. Without a
    marker, the folder of alembic.ini (else the Alembic directory's parent). Never a package
    directory (one holding ``__init__.py``): on ``sys.path`` its modules would shadow real ones
    (a ``shop/http.py`` standing in for the standard library's ``http``), so the search goes on
    up to the folder that holds the package.
    """
    start = alembic_dir.resolve()
    found = next(
        (
            folder
            for folder in (start, *start.parents)
            if any((folder / marker).exists() for marker in _CHECKOUT_MARKERS)
        ),
        None,
    )
    if found is None:
        ini = alembic_ini(alembic_dir)
        found = ini.parent.resolve() if ini else start.parent
    while (found / "__init__.py").is_file() and found.parent != found:
        found = found.parent
    return found


def prepend_sys_path(alembic_dir: Path, root: Path) -> list[Path]:
    """alembic.ini's ``prepend_sys_path`` entries, taken from ``root`` (Alembic takes them from
    the folder it runs in, the checkout root), package directories left out."""
    ini = alembic_ini(alembic_dir)
    if ini is None:
        return []
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        raw = parser.get("alembic", "prepend_sys_path", fallback=None)
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise MigrationInputError("alembic.ini", f"{ini} cannot be read: {exc}") from exc
    entries = [e for e in re.split(r"[,\s" + re.escape(os.pathsep) + r"]+", raw or "") if e]
    paths = [(root / entry).resolve() for entry in entries]
    return [p for p in paths if p.is_dir() and not (p / "__init__.py").is_file()]


def application_sys_path(
    alembic_dir: Path, root: Path, configured: list[str] | None, argument: str
) -> list[str]:
    """What goes on ``sys.path`` while revisions are read: ``configured`` (the spec's
    ``migrations.sys_path``, relative entries from ``root``) when given, else alembic.ini's
    ``prepend_sys_path`` and ``root``.

    Raises:
        MigrationInputError: a configured entry is not a folder, or is a package directory.
    """
    if configured:
        result = []
        for entry in configured:
            path = Path(entry) if Path(entry).is_absolute() else root / entry
            if not path.is_dir():
                raise MigrationInputError(argument, f"{entry!r} is not a folder (from {root})")
            if (path / "__init__.py").is_file():
                raise MigrationInputError(
                    argument,
                    f"{entry!r} is a package directory (it holds __init__.py): its modules "
                    "would shadow the standard library's and installed ones of the same name; "
                    f"give the folder that holds the package ({path.resolve().parent})",
                )
            result.append(str(path.resolve()))
        return result
    paths = [*prepend_sys_path(alembic_dir, root), root]
    return [str(p) for p in dict.fromkeys(paths)]


def alembic_ini(alembic_dir: Path) -> Path | None:
    """The project's alembic.ini: in the Alembic directory or its parent (None when absent)."""
    for candidate in (alembic_dir, alembic_dir.parent):
        if (candidate / "alembic.ini").is_file():
            return candidate / "alembic.ini"
    return None


def version_locations(alembic_dir: Path) -> list[Path]:
    """Every folder holding revisions: alembic.ini's ``version_locations`` when set (split as
    its ``version_path_separator`` says, ``%(here)s`` and relative paths taken from the ini's
    folder), else ``versions/`` (or the directory itself).

    Raises:
        MigrationInputError: alembic.ini cannot be read or names a folder that does not exist.
    """
    ini = alembic_ini(alembic_dir)
    if ini is None:
        return _default_locations(alembic_dir)
    parser = configparser.ConfigParser(defaults={"here": str(ini.parent.resolve())})
    try:
        parser.read(ini, encoding="utf-8")
        raw = parser.get("alembic", "version_locations", fallback=None)
        separator = parser.get("alembic", "path_separator", fallback=None) or parser.get(
            "alembic", "version_path_separator", fallback=None
        )
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise MigrationInputError("alembic.ini", f"{ini} cannot be read: {exc}") from exc
    if not raw or not raw.strip():
        return _default_locations(alembic_dir)
    splitters = {"space": " ", "comma": ",", "os": os.pathsep, "newline": "\n", ":": ":", ";": ";"}
    # Without a separator Alembic's legacy behaviour applies: spaces or commas.
    parts = raw.split(splitters[separator]) if separator in splitters else re.split(r"[,\s]+", raw)
    locations = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        path = Path(part)
        path = path if path.is_absolute() else (ini.parent / path)
        if not path.is_dir():
            raise MigrationInputError(
                "alembic.ini", f"version_locations names {part}, which is not a directory"
            )
        locations.append(path.resolve())
    return locations


def _default_locations(alembic_dir: Path) -> list[Path]:
    """``versions/``; when it holds only folders of revisions, those folders, and when one is
    named ``postgresql`` (one history per dialect, env.py picking by dialect) that one alone:
    deployflow reads the PostgreSQL history."""
    versions = versions_dir(alembic_dir)
    if any(p.suffix == ".py" and p.name != "__init__.py" for p in versions.glob("*.py")):
        return [versions]
    folders = [
        d for d in sorted(versions.iterdir()) if d.is_dir() and any(d.glob("*.py"))
    ] if versions.is_dir() else []  # fmt: skip
    postgres = [d for d in folders if d.name in ("postgresql", "postgres")]
    return postgres[:1] or folders or [versions]


def versions_dir(alembic_dir: Path) -> Path:
    """The directory holding the revision files (``versions/`` or the directory itself)."""
    versions = alembic_dir / "versions"
    return versions if versions.is_dir() else alembic_dir


def load_graph(alembic_dir: Path) -> RevisionGraph:
    """Read every revision file of ``alembic_dir``.

    Raises:
        MigrationInputError: the directory does not exist or holds no revision.
    """
    if not alembic_dir.is_dir():
        raise MigrationInputError(
            "ALEMBIC_DIR", f"{alembic_dir} is not a directory; give the Alembic directory"
        )
    revisions: dict[str, RevisionSource] = {}
    unreadable: dict[str, str] = {}
    locations = version_locations(alembic_dir)
    paths = sorted({path for folder in locations for path in folder.glob("*.py")})
    for path in paths:
        if path.name in {"env.py", "__init__.py"}:
            continue
        try:
            source = read_revision_source(path)
        except RevisionSourceError as exc:
            unreadable[path.name] = str(exc)
            continue
        revisions[source.revision] = source
    if not revisions:
        raise MigrationInputError(
            "ALEMBIC_DIR",
            f"no Alembic revision found in {', '.join(map(str, locations))}; give the directory "
            "holding env.py and versions/",
        )
    return RevisionGraph(revisions, unreadable)


def resolve(graph: RevisionGraph, revision: str, argument: str) -> str:
    """Resolve a full id, a unique prefix, or ``head``; raise naming ``argument`` otherwise."""
    if revision == "head":
        heads = graph.heads()
        if len(heads) == 1:
            return heads[0]
        raise MigrationInputError(argument, f"'head' is ambiguous, heads are {', '.join(heads)}")
    if revision in graph.revisions:
        return revision
    matches = [rev for rev in graph.revisions if rev.startswith(revision)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(graph.revisions)[:20])
    raise MigrationInputError(
        argument,
        f"revision {revision!r} is not in the Alembic directory; known: {known}, base, head",
    )
