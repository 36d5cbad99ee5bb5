"""Benchmark step 1: wall time of ``run_all`` against the slowest single check on the fixtures.

Run with ``uv run python bench/bench_prechecks.py``. Goal: run_all wall time <= 1.2x the slowest
check run alone. Needs the TypeScript fixture's node_modules (``make test`` installs them).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deployflow.checks import CheckContext, PreChecksSpec, run_all, run_check

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "checks"
GOAL = 1.2
REPEATS = 3  # medians: a shared 2-core machine is noisy


def fixture_spec(checkout: Path, ts: Path, cache: Path) -> PreChecksSpec:
    py = sys.executable
    return PreChecksSpec.model_validate(
        {
            "checkout": str(checkout),
            "tests": {
                "command": [
                    py,
                    "-m",
                    "pytest",
                    "-q",
                    "--cov=calc",
                    "--cov-report=xml",
                    "checks_calc.py",
                ],
                "coverage": {"path": "coverage.xml", "format": "cobertura"},
            },
            "lint": {
                "command": [py, "-m", "ruff", "check", "--output-format", "json", "calc.py"],
                "output_format": "ruff-json",
            },
            "typecheck": {
                "command": [py, "-m", "mypy", "--strict", "--cache-dir", str(cache), "calc.py"],
                "output_format": "mypy",
            },
            "build": {
                "command": [str(ts / "node_modules/.bin/tsc"), "-p", str(ts / "tsconfig.json")]
            },
            "changelog": {},
        }
    )


def main() -> int:
    """Print per-check times, the run_all wall time and the ratio to the slowest check."""
    ts = FIXTURES / "ts_project"
    if not (ts / "node_modules").is_dir():
        print("tests/fixtures/checks/ts_project/node_modules is missing; run make test first")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        checkout = Path(tmp) / "python_project"
        shutil.copytree(FIXTURES / "python_project", checkout)
        spec = fixture_spec(checkout, ts, Path(tmp) / "mypy-cache")
        ctx = CheckContext(version="1.1.0")
        run_all(spec, ctx)  # warm-up: caches (mypy, OS page cache) as a deploy runner would have
        singles: dict[str, float] = {}
        for kind in ("tests", "lint", "typecheck", "build", "changelog"):
            times = []
            for _ in range(REPEATS):
                started = time.monotonic()
                result = run_check(kind, spec, ctx)
                times.append(time.monotonic() - started)
            singles[kind] = statistics.median(times)
            figure = f"{result.status.value:<8} {result.figure}"
            print(f"{kind:<10} alone: {singles[kind]:6.2f}s  {figure}")
        walls = []
        for _ in range(REPEATS):
            started = time.monotonic()
            report = run_all(spec, ctx)
            walls.append(time.monotonic() - started)
        wall = statistics.median(walls)
    slowest_kind = max(singles, key=lambda kind: singles[kind])
    ratio = wall / singles[slowest_kind]
    print(f"medians of {REPEATS} runs each")
    print(f"sum of checks run alone: {sum(singles.values()):6.2f}s")
    print(f"slowest single check   : {singles[slowest_kind]:6.2f}s ({slowest_kind})")
    print(f"run_all wall time      : {wall:6.2f}s (report passed: {report.passed})")
    print(f"ratio                  : {ratio:6.2f}x (goal <= {GOAL}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
