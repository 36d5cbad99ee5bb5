"""Report verdicts, the markdown artifact, records, skips and advisory checks."""

from __future__ import annotations

import json

import pytest

from deployflow.checks import (
    CHECK_KINDS,
    CheckContext,
    CheckResult,
    CheckStatus,
    PreCheckReport,
    PreChecksSpec,
    planned_checks,
    run_check,
)

pytestmark = pytest.mark.unit


def result(name, status, **fields):
    return CheckResult(name=name, status=status, reason=fields.pop("reason", "why"), **fields)


def test_report_fails_only_on_blocking_statuses():
    ok = PreCheckReport(
        results=[
            result("tests", CheckStatus.PASSED),
            result("lint", CheckStatus.SKIPPED),
            result("audit", CheckStatus.ADVISORY_FAILED),
        ]
    )
    assert ok.passed
    for status in (CheckStatus.FAILED, CheckStatus.ERROR):
        assert not PreCheckReport(results=[*ok.results, result("build", status)]).passed


def test_markdown_has_the_table_and_the_evidence_of_each_failure():
    report = PreCheckReport(
        results=[
            result("tests", CheckStatus.PASSED, figure="83.4% coverage", duration_seconds=2.5),
            result(
                "lint",
                CheckStatus.FAILED,
                figure="3 problems",
                reason="eslint found 3 problems (exit 1)",
                output_tail="src/a.ts:1: error no-undef: ```x``` | y",
            ),
            result("changelog", CheckStatus.SKIPPED, reason="hotfix, agreed with QA"),
        ]
    )
    markdown = report.to_markdown()
    assert "## Pre-deployment checks: FAILED" in markdown
    assert "| tests | passed | 83.4% coverage | 2.5s |" in markdown
    assert "| lint | failed | 3 problems |" in markdown
    assert "| changelog | skipped (hotfix, agreed with QA) |" in markdown
    assert "### lint: failed\n\neslint found 3 problems (exit 1)" in markdown
    # The tail holds a triple backtick, so the fence must be longer to contain it.
    assert "````text\nsrc/a.ts:1: error no-undef: ```x``` | y\n````" in markdown
    assert "### tests" not in markdown


def test_to_dict_and_record_are_json():
    report = PreCheckReport(
        results=[result("build", CheckStatus.FAILED, figure="exit 2", output_tail="boom")],
        wall_seconds=1.23456,
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False
    assert data["wall_seconds"] == 1.235
    assert data["results"][0]["status"] == "failed"
    record = report.results[0].to_record()
    assert set(record) == {"name", "status", "figure", "reason", "duration_seconds", "details"}
    assert record["details"]["output_tail"] == "boom"
    assert record["details"]["required"] is True


def test_unconfigured_and_skipped_checks_say_why():
    spec = PreChecksSpec.model_validate(
        {
            "checkout": ".",
            "lint": {"command": ["ruff"], "skip_reason": "linter migration, TICKET-12"},
        }
    )
    ctx = CheckContext(version="1.0.0")
    assert planned_checks(spec) == list(CHECK_KINDS)
    lint = run_check("lint", spec, ctx)
    assert (lint.status, lint.reason) == (CheckStatus.SKIPPED, "linter migration, TICKET-12")
    tests = run_check("tests", spec, ctx)
    assert tests.status is CheckStatus.SKIPPED
    assert tests.reason == "not configured (no pre_checks.tests section in the service spec)"
    with pytest.raises(ValueError, match="unknown check kind 'style'"):
        run_check("style", spec, ctx)


def test_missing_checkout_is_an_error_not_a_crash(tmp_path):
    spec = PreChecksSpec.model_validate(
        {"checkout": str(tmp_path / "gone"), "build": {"command": ["true"]}}
    )
    build = run_check("build", spec, CheckContext(version="1.0.0"))
    assert build.status is CheckStatus.ERROR
    assert "is not a directory" in build.reason
