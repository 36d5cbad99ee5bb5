"""tsc, ESLint and npm audit on the TypeScript fixture project, with the real tools."""

from __future__ import annotations

import pytest

from deployflow.checks import CheckContext, CheckStatus, PreChecksSpec, run_check
from deployflow.checks.spec import ProblemFormat
from deployflow.processes import free_port

pytestmark = pytest.mark.integration

CTX = CheckContext(version="1.0.0")


def problems_spec(project, kind, command, output_format: ProblemFormat):
    return PreChecksSpec.model_validate(
        {"checkout": str(project), kind: {"command": command, "output_format": output_format}}
    )


def test_tsc_passes_and_counts_errors(ts_project):
    tsc = str(ts_project / "node_modules" / ".bin" / "tsc")
    result = run_check(
        "typecheck",
        problems_spec(ts_project, "typecheck", [tsc, "-p", "tsconfig.json"], "tsc"),
        CTX,
    )
    assert (result.status, result.figure) == (CheckStatus.PASSED, "0 problems")
    result = run_check(
        "typecheck",
        problems_spec(ts_project, "typecheck", [tsc, "-p", "tsconfig.broken.json"], "tsc"),
        CTX,
    )
    assert (result.status, result.figure) == (CheckStatus.FAILED, "3 problems")
    assert "broken/pricing.ts:9: error TS2322" in result.output_tail


def test_eslint_passes_and_counts_problems(ts_project):
    eslint = [str(ts_project / "node_modules" / ".bin" / "eslint"), "--format", "json"]
    result = run_check(
        "lint", problems_spec(ts_project, "lint", [*eslint, "src"], "eslint-json"), CTX
    )
    assert (result.status, result.figure) == (CheckStatus.PASSED, "0 problems")
    result = run_check(
        "lint", problems_spec(ts_project, "lint", [*eslint, "broken"], "eslint-json"), CTX
    )
    assert (result.status, result.figure) == (CheckStatus.FAILED, "2 problems")
    assert "broken/pricing.ts:8: error prefer-const" in result.output_tail


def test_eslint_crash_is_an_error_not_a_count(ts_project):
    eslint = [
        str(ts_project / "node_modules" / ".bin" / "eslint"),
        "--format",
        "json",
        "--config",
        "missing.js",
        "src",
    ]
    result = run_check("lint", problems_spec(ts_project, "lint", eslint, "eslint-json"), CTX)
    assert result.status is CheckStatus.ERROR
    assert "without a readable report" in result.reason


def npm_audit(project, registry, severity="high", lock_only=False):
    command = ["npm", "audit", "--json", "--registry", registry]
    if lock_only:
        command.append("--package-lock-only")
    return PreChecksSpec.model_validate(
        {
            "checkout": str(project),
            "audit": {"tool": "npm", "command": command, "severity": severity, "timeout": "60s"},
        }
    )


def test_npm_audit_passes_fails_by_severity_and_errors_when_unreachable(ts_project, advisories):
    registry = f"{advisories.url}/"
    result = run_check("audit", npm_audit(ts_project, registry), CTX)
    assert result.status is CheckStatus.PASSED, result.reason
    assert result.details["audited"] == 120

    vulnerable = ts_project.parent / "npm_vulnerable"
    result = run_check("audit", npm_audit(vulnerable, registry, lock_only=True), CTX)
    assert result.status is CheckStatus.FAILED
    assert result.figure == "2 vulnerabilities >= high"
    assert "minimist [critical]" in result.output_tail
    result = run_check(
        "audit", npm_audit(vulnerable, registry, severity="critical", lock_only=True), CTX
    )
    assert result.figure == "1 vulnerability >= critical"

    closed = f"http://127.0.0.1:{free_port()}/"
    result = run_check("audit", npm_audit(vulnerable, closed, lock_only=True), CTX)
    assert result.status is CheckStatus.ERROR
    assert "npm audit" in result.reason
