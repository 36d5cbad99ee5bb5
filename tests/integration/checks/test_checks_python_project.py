"""Every check kind on the Python fixture project with the real tools (pytest-cov, ruff, mypy,
pip-audit, git), each with a passing and a failing case."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployflow.checks import CheckContext, CheckStatus, PreChecksSpec, run_all, run_check
from deployflow.processes import free_port

pytestmark = pytest.mark.integration

PY = sys.executable
CTX = CheckContext(version="1.1.0")


def spec_for(project, **sections):
    return PreChecksSpec.model_validate({"checkout": str(project), **sections})


def pytest_cov(*targets, report="xml:coverage.xml", tests="checks_calc.py"):
    cov = [f"--cov={target}" for target in targets]
    return [PY, "-m", "pytest", "-q", *cov, f"--cov-report={report}", tests]


def test_tests_pass_above_threshold_and_fail_below(python_project):
    coverage = {"path": "coverage.xml", "format": "cobertura"}
    good = spec_for(python_project, tests={"command": pytest_cov("calc"), "coverage": coverage})
    passed = run_check("tests", good, CTX)
    assert passed.status is CheckStatus.PASSED, passed.reason
    assert passed.figure == "100.0% coverage"

    low = spec_for(
        python_project,
        tests={
            "command": pytest_cov("calc", "legacy", report="lcov:cov.lcov"),
            "coverage": {"path": "cov.lcov", "format": "lcov"},
        },
    )
    failed = run_check("tests", low, CTX)
    assert failed.status is CheckStatus.FAILED
    assert failed.figure == "25.0% coverage"
    assert failed.reason == "line coverage 25.0% is below the 80% threshold"
    assert failed.details["lines_total"] == 24


def test_failing_test_and_missing_or_stale_report(python_project):
    coverage = {"path": "coverage.xml", "format": "cobertura"}
    failing = spec_for(
        python_project,
        tests={"command": pytest_cov("calc", tests="checks_failing.py"), "coverage": coverage},
    )
    result = run_check("tests", failing, CTX)
    assert result.status is CheckStatus.FAILED
    assert result.figure.startswith("exit 1")
    assert "assert 4 == 5" in result.output_tail

    (python_project / "old.xml").write_text("<coverage lines-valid='1' lines-covered='1'/>")
    stale = spec_for(
        python_project,
        tests={
            "command": [PY, "-c", "import os; os.utime('old.xml', (0, 0))"],
            "coverage": {"path": "old.xml", "format": "cobertura"},
        },
    )
    result = run_check("tests", stale, CTX)
    assert result.status is CheckStatus.ERROR
    assert "predates this run" in result.reason

    never = {"path": "never.xml", "format": "cobertura"}
    missing = spec_for(python_project, tests={"command": [PY, "-c", "pass"], "coverage": never})
    result = run_check("tests", missing, CTX)
    assert result.status is CheckStatus.ERROR
    assert result.reason == "coverage report never.xml was not written"


def test_ruff_lint_passes_on_clean_code_and_counts_problems(python_project):
    ruff = [PY, "-m", "ruff", "check", "--no-cache", "--output-format", "json"]
    clean = spec_for(
        python_project, lint={"command": [*ruff, "calc.py", "legacy"], "output_format": "ruff-json"}
    )
    result = run_check("lint", clean, CTX)
    assert (result.status, result.figure) == (CheckStatus.PASSED, "0 problems")

    broken = spec_for(
        python_project, lint={"command": [*ruff, "broken.py"], "output_format": "ruff-json"}
    )
    result = run_check("lint", broken, CTX)
    assert result.status is CheckStatus.FAILED
    assert result.figure == "3 problems"
    assert "broken.py:3: error F401" in result.output_tail


def test_mypy_typecheck_passes_and_fails(python_project, tmp_path_factory):
    cache = str(tmp_path_factory.getbasetemp() / "mypy-cache")
    mypy = [PY, "-m", "mypy", "--strict", "--cache-dir", cache]
    result = run_check(
        "typecheck",
        spec_for(
            python_project, typecheck={"command": [*mypy, "calc.py"], "output_format": "mypy"}
        ),
        CTX,
    )
    assert (result.status, result.figure) == (CheckStatus.PASSED, "0 problems")
    result = run_check(
        "typecheck",
        spec_for(
            python_project, typecheck={"command": [*mypy, "broken.py"], "output_format": "mypy"}
        ),
        CTX,
    )
    assert (result.status, result.figure) == (CheckStatus.FAILED, "4 problems")
    assert result.details["first"][0].startswith("broken.py:8: error assignment")


def test_build_passes_fails_times_out_and_sees_only_allowed_env(python_project):
    build = lambda command, **extra: spec_for(python_project, build={"command": command, **extra})  # noqa: E731
    assert (
        run_check("build", build([PY, "-m", "py_compile", "calc.py"]), CTX).status
        is CheckStatus.PASSED
    )
    failed = run_check("build", build([PY, "-m", "py_compile", "syntax_error.py"]), CTX)
    assert failed.status is CheckStatus.FAILED
    assert "SyntaxError" in failed.output_tail

    slow = run_check(
        "build", build([PY, "-c", "import time; time.sleep(60)"], timeout="500ms"), CTX
    )
    assert slow.status is CheckStatus.ERROR
    assert slow.figure == "timed out"
    assert slow.duration_seconds < 10

    missing = run_check("build", build(["no-such-tool-xyz"]), CTX)
    assert missing.status is CheckStatus.ERROR
    assert "could not start 'no-such-tool-xyz'" in missing.reason

    probe = (
        "import os, sys; "
        "sys.exit(0 if os.environ.get('EXTRA') == 'yes' and 'LEAK' not in os.environ else 3)"
    )
    ctx = CheckContext(version="1.1.0", environ={"PATH": "/usr/bin:/bin", "LEAK": "token"})
    assert (
        run_check("build", build([PY, "-c", probe], env={"EXTRA": "yes"}), ctx).status
        is CheckStatus.PASSED
    )


def test_advisory_build_failure_does_not_block(python_project):
    spec = spec_for(
        python_project,
        build={"command": [PY, "-m", "py_compile", "syntax_error.py"], "required": False},
    )
    result = run_check("build", spec, CTX)
    assert result.status is CheckStatus.ADVISORY_FAILED
    assert result.details["outcome"] == "failed"


def pip_audit(requirements, osv_url):
    return [
        PY,
        "-m",
        "pip_audit",
        "--no-deps",
        "--disable-pip",
        "--progress-spinner",
        "off",
        "-r",
        requirements,
        "-f",
        "json",
        "-s",
        "osv",
        "--osv-url",
        osv_url,
    ]


def test_pip_audit_passes_fails_and_errors_when_advisories_are_unreachable(
    python_project, advisories
):
    osv = f"{advisories.url}/v1/query"
    clean = spec_for(
        python_project, audit={"tool": "pip", "command": pip_audit("requirements.txt", osv)}
    )
    result = run_check("audit", clean, CTX)
    assert result.status is CheckStatus.PASSED, result.reason

    vulnerable = spec_for(
        python_project,
        audit={"tool": "pip", "command": pip_audit("requirements-vulnerable.txt", osv)},
    )
    result = run_check("audit", vulnerable, CTX)
    assert result.status is CheckStatus.FAILED
    assert result.figure == "1 vulnerability >= high"
    assert "jinja2 2.10 [severity not reported]: PYSEC-2019-217" in result.output_tail

    closed = f"http://127.0.0.1:{free_port()}/v1/query"
    unreachable = spec_for(
        python_project,
        audit={"tool": "pip", "command": pip_audit("requirements.txt", closed), "timeout": "60s"},
    )
    result = run_check("audit", unreachable, CTX)
    assert result.status is CheckStatus.ERROR
    assert "pip-audit gave no usable report" in result.reason


def git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_changelog_section_change_and_neither(python_project):
    git(python_project, "init", "-q", "-b", "main")
    git(python_project, "add", ".")
    git(python_project, "commit", "-q", "-m", "1.1.0")
    git(python_project, "tag", "v1.1.0")
    spec = spec_for(python_project, changelog={})

    named = run_check("changelog", spec, CheckContext(version="1.1.0"))
    assert (named.status, named.figure) == (CheckStatus.PASSED, "section 1.1.0")

    not_named = run_check("changelog", spec, CheckContext(version="1.2.0", previous_ref="v1.1.0"))
    assert not_named.status is CheckStatus.FAILED
    assert "did not change since v1.1.0" in not_named.reason

    changelog = python_project / "CHANGELOG.md"
    changelog.write_text(changelog.read_text() + "\n- Unreleased note.\n")
    git(python_project, "commit", "-q", "-am", "note")
    changed = run_check("changelog", spec, CheckContext(version="1.2.0", previous_ref="v1.1.0"))
    assert (changed.status, changed.figure) == (CheckStatus.PASSED, "changed since v1.1.0")

    unknown = run_check("changelog", spec, CheckContext(version="1.2.0", previous_ref="v0.9"))
    assert unknown.status is CheckStatus.ERROR
    injected = run_check(
        "changelog", spec, CheckContext(version="1.2.0", previous_ref="--output=/tmp/x")
    )
    assert injected.status is CheckStatus.ERROR
    assert "not a valid git ref" in injected.reason


def test_run_all_reports_every_gate_and_blocks_on_failure(python_project, advisories):
    spec = spec_for(
        python_project,
        tests={
            "command": pytest_cov("calc"),
            "coverage": {"path": "coverage.xml", "format": "cobertura"},
        },
        lint={
            "command": [
                PY,
                "-m",
                "ruff",
                "check",
                "--no-cache",
                "--output-format",
                "json",
                "broken.py",
            ],
            "output_format": "ruff-json",
        },
        build={"command": [PY, "-m", "py_compile", "calc.py"]},
        audit={
            "tool": "pip",
            "command": pip_audit("requirements.txt", f"{advisories.url}/v1/query"),
        },
        changelog={},
    )
    report = run_all(spec, CTX)
    statuses = {result.name: result.status for result in report.results}
    assert statuses == {
        "tests": CheckStatus.PASSED,
        "lint": CheckStatus.FAILED,
        "typecheck": CheckStatus.SKIPPED,
        "build": CheckStatus.PASSED,
        "audit": CheckStatus.PASSED,
        "review": CheckStatus.SKIPPED,
        "changelog": CheckStatus.PASSED,
    }
    assert not report.passed
    markdown = report.to_markdown()
    assert "| lint | failed | 3 problems |" in markdown
    assert "### lint: failed" in markdown
    # Concurrent: the wall time is below the sum of the checks' durations.
    assert report.wall_seconds < sum(result.duration_seconds for result in report.results)
