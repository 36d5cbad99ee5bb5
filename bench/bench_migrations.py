"""Benchmark step 2 against squawk on the same revisions: agreement per rule, time per revision.

Run with ``uv run python bench/bench_migrations.py`` (squawk comes from the ``squawk-cli`` dev
dependency). The corpus is deployflow's own fixtures: every rule's violating and safe revision
(each on top of the shared base revision), the single-revision fixtures and the fixture projects.

For each revision deployflow runs its check, and squawk lints the SQL that Alembic renders for the
revision's upgrade() offline (the SQL deployflow captured), assumed to run in a transaction as
Alembic runs it. Findings are compared per revision through the rule mapping below (deployflow
findings count whether suppressed or not: squawk cannot read the Python allow comments).

``--real NAME=ALEMBIC_DIR[=PYTHON] ...`` reads real projects' histories instead: with deployflow's
interpreter, then with the project's own (its environment built from its requirements), printing
the share of revisions read fully, why the others were not, and the CPU time per revision.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from deployflow.migrations import check_migrations
from deployflow.migrations.capture import InProcessCapture
from deployflow.migrations.check import env_fallback
from deployflow.migrations.graph import load_graph

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "migrations"
SQUAWK = shutil.which("squawk", path=str(Path(sys.executable).parent)) or shutil.which("squawk")
# Left out: revisions that block (a sleep, a FIFO nobody writes to) or never end.
SKIPPED_PROJECTS = {"service_app"}
SKIPPED_REVISIONS = {"loops.py", "blocks.py"}

# deployflow rule -> squawk rule(s) that report the same danger.
MAPPING: dict[str, tuple[str, ...]] = {
    "add-column-not-null-without-default": ("adding-required-field",),
    "add-column-volatile-default": ("adding-field-with-default", "adding-serial-primary-key-field"),
    "alter-column-type": ("changing-column-type",),
    "set-not-null": ("adding-not-nullable-field",),
    "add-check-constraint-without-not-valid": ("constraint-missing-not-valid",),
    "add-foreign-key-without-not-valid": (
        "adding-foreign-key-constraint", "constraint-missing-not-valid",
    ),
    "add-unique-constraint": ("disallowed-unique-constraint", "constraint-missing-not-valid"),
    "add-primary-key": ("constraint-missing-not-valid", "adding-serial-primary-key-field"),
    "add-exclusion-constraint": ("constraint-missing-not-valid", "adding-serial-primary-key-field"),
    "create-index-non-concurrent": ("require-concurrent-index-creation",),
    "drop-index-non-concurrent": ("require-concurrent-index-deletion",),
    "concurrently-in-transaction": ("ban-concurrent-index-creation-in-transaction",),
    "drop-column": ("ban-drop-column",),
    "drop-table": ("ban-drop-table",),
    "rename-column": ("renaming-column",),
    "rename-table": ("renaming-table",),
    "truncate-cascade": ("ban-truncate-cascade",),
    "missing-lock-timeout": ("require-lock-timeout",),
    "raw-sql-unparseable": ("syntax-error",),
}  # fmt: skip
SQUAWK_TO_DEPLOYFLOW: dict[str, set[str]] = {}
for _rule, _names in MAPPING.items():
    for _name in _names:
        SQUAWK_TO_DEPLOYFLOW.setdefault(_name, set()).add(_rule)


def alembic_dirs(work: Path) -> list[Path]:
    """Every Alembic directory of the corpus (single revisions assembled on the base)."""
    dirs = []
    singles = [p for p in sorted((CORPUS / "rules").glob("*/*.py"))]
    singles += [p for p in sorted((CORPUS / "revisions").glob("*.py"))]
    for index, path in enumerate(singles):
        if path.name in SKIPPED_REVISIONS:
            continue
        versions = work / f"single_{index}" / "versions"
        versions.mkdir(parents=True)
        shutil.copy(CORPUS / "base.py", versions / "base.py")
        shutil.copy(path, versions / path.name)
        dirs.append(versions.parent)
    for project in sorted((CORPUS / "projects").iterdir()):
        if project.name in SKIPPED_PROJECTS:
            continue
        dirs.append(project / "migrations" if (project / "migrations").is_dir() else project)
    return dirs


def deployflow_findings(alembic_dir: Path) -> tuple[dict[str, set[str]], float, int]:
    """{revision: rule ids}, wall seconds of the check, revisions checked."""
    started = time.perf_counter()
    report = check_migrations(alembic_dir, from_rev=None, revision_timeout=5)
    seconds = time.perf_counter() - started
    return (
        {r.revision: {f.rule_id for f in r.findings} for r in report.revisions},
        seconds,
        len(report.revisions),
    )


def rendered_sql(alembic_dir: Path, out: Path) -> dict[str, Path]:
    """The upgrade SQL of every revision, one file each, as Alembic renders it offline."""
    graph = load_graph(alembic_dir)
    runner = InProcessCapture(
        timeout=5, sys_path=[str(alembic_dir.parent)], env=env_fallback(alembic_dir, graph)
    )
    files = {}
    for rev, source in graph.revisions.items():
        sql = runner.capture(source.path, ["upgrade"]).get("upgrade").sql
        path = out / f"{alembic_dir.name}_{abs(hash(str(alembic_dir)))}_{rev}.sql"
        path.write_text(sql)
        files[rev] = path
    return files


def squawk_findings(files: list[Path]) -> tuple[dict[Path, set[str]], float]:
    """{file: squawk rule names} and wall seconds of one squawk run over every file."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(SQUAWK), "--reporter", "json", "--assume-in-transaction", *map(str, files)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    found: dict[Path, set[str]] = {f: set() for f in files}
    for item in json.loads(done.stdout or "[]"):
        found.setdefault(Path(item["file"]), set()).add(item.get("rule_name") or "syntax-error")
    return found, seconds


def squawk_single_file_seconds(files: list[Path], sample: int = 10) -> float:
    """Median wall time of squawk on one file (the process start included)."""
    times = []
    for path in files[:sample]:
        started = time.perf_counter()
        subprocess.run(
            [str(SQUAWK), "--reporter", "json", "--assume-in-transaction", str(path)],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    if SQUAWK is None:
        print("squawk not found: `uv sync` installs squawk-cli (a dev dependency)")
        return 2
    both: Counter[str] = Counter()
    only_deployflow: Counter[str] = Counter()
    only_squawk: Counter[str] = Counter()
    unmapped_deployflow: Counter[str] = Counter()
    unmapped_squawk: Counter[str] = Counter()
    deployflow_seconds = 0.0
    revisions = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sql_dir = work / "sql"
        sql_dir.mkdir()
        per_revision: list[tuple[str, set[str], Path]] = []
        base_counted = False
        dirs = alembic_dirs(work)
        # Warm the imports so the first project does not carry them.
        deployflow_findings(dirs[0])
        for alembic_dir in dirs:
            found, seconds, count = deployflow_findings(alembic_dir)
            deployflow_seconds += seconds
            revisions += count
            files = rendered_sql(alembic_dir, sql_dir)
            for rev, path in files.items():
                # The shared base under every single-revision fixture is counted once.
                if rev == "base0001" and alembic_dir.name.startswith("single_"):
                    if base_counted:
                        continue
                    base_counted = True
                per_revision.append((rev, found.get(rev, set()), path))
        squawk, squawk_seconds = squawk_findings([path for _, _, path in per_revision])
        single = squawk_single_file_seconds([path for _, _, path in per_revision])
    where: dict[tuple[str, str], list[str]] = {}
    for rev, ours, path in per_revision:
        theirs = squawk.get(path, set())
        candidates = {s: SQUAWK_TO_DEPLOYFLOW[s] for s in theirs if s in SQUAWK_TO_DEPLOYFLOW}
        covered = set().union(*candidates.values()) if candidates else set()
        for rule in ours:
            if rule not in MAPPING:
                unmapped_deployflow[rule] += 1
            elif rule in covered:
                both[rule] += 1
            else:
                only_deployflow[rule] += 1
                where.setdefault(("deployflow", rule), []).append(rev)
        for name, rules in candidates.items():
            if not rules & ours:
                only_squawk[name] += 1
                where.setdefault(("squawk", name), []).append(rev)
        for name in theirs:
            if name not in SQUAWK_TO_DEPLOYFLOW:
                unmapped_squawk[name] += 1
    print(f"{len(per_revision)} revisions in {len(dirs)} Alembic directories\n")
    print(f"{'deployflow rule':40} {'both':>5} {'only deployflow':>16}   squawk rule(s)")
    for rule, names in MAPPING.items():
        if both[rule] or only_deployflow[rule]:
            print(f"{rule:40} {both[rule]:>5} {only_deployflow[rule]:>16}   {', '.join(names)}")
    print(f"\n{'squawk rule':46} {'only squawk':>12}")
    for name, count in only_squawk.most_common():
        print(f"{name:46} {count:>12}")
    agreed = sum(both.values())
    total = agreed + sum(only_deployflow.values()) + sum(only_squawk.values())
    print(f"\nagreement on mapped rules: {agreed}/{total} revision-rule pairs")
    for (tool, rule), revs in sorted(where.items()):
        print(f"  only {tool} {rule}: {', '.join(sorted(revs)[:8])}")
    print(
        "deployflow rules squawk has no counterpart for:", dict(unmapped_deployflow.most_common())
    )
    print("squawk rules with no deployflow counterpart:", dict(unmapped_squawk.most_common()))
    print(
        f"\ntime per revision: deployflow {deployflow_seconds / revisions * 1000:.1f} ms "
        f"(import, run upgrade() and downgrade() offline, lint); squawk "
        f"{squawk_seconds / len(per_revision) * 1000:.1f} ms batched over all files, "
        f"{single * 1000:.1f} ms for one file alone (process start included)"
    )
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the capture workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def real_project(name: str, alembic_dir: Path, python: str | None) -> None:
    """One real project's history: how much is read, and the CPU time per revision, with the
    interpreter given (the project's own environment) or deployflow's (None)."""
    cpu = _cpu_seconds()
    started = time.perf_counter()
    report = check_migrations(alembic_dir, from_rev="base", python=python)
    wall = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu
    revisions = report.revisions
    read = [r for r in revisions if r.unreadable is None]
    why = Counter(
        "network refused" if "reach the network" in (r.unreadable or "")
        else (r.unreadable or "").split(";")[0].split(" (")[0][:70]
        for r in revisions if r.unreadable
    )  # fmt: skip
    env = report.read_with
    which = "own interpreter" if python else "deployflow's interpreter"
    print(
        f"{name:10} {env.get('python', '?'):8} SQLAlchemy {env.get('sqlalchemy', '?'):8} "
        f"{len(read):>3}/{len(revisions):<3} read ({len(read) / max(len(revisions), 1):.0%}), "
        f"{cpu / max(len(revisions), 1) * 1000:6.1f} ms CPU per revision "
        f"({wall:.1f} s wall), {which}"
    )
    for reason, count in why.most_common(4):
        print(f"{'':12}{count:>3} unread: {reason}")


def main_real(arguments: list[str]) -> int:
    """``--real NAME=ALEMBIC_DIR[=PYTHON] ...``: each real project's history read with
    deployflow's interpreter, then (when given) with the project's own. The projects are
    checkouts fetched beforehand (nothing is downloaded here), their environments built from
    their own requirements; environment variables their imports need are set by the caller."""
    print("project    python   library              read          CPU per revision")
    for argument in arguments:
        name, _, rest = argument.partition("=")
        alembic_dir, _, python = rest.partition("=")
        real_project(name, Path(alembic_dir), None)
        if python:
            real_project(name, Path(alembic_dir), python)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--real"]:
        raise SystemExit(main_real(sys.argv[2:]))
    raise SystemExit(main())
