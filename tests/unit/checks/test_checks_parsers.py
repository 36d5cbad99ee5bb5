"""Report parsers on outputs captured from real tool runs, plus broken variants of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployflow.checks.parsers import (
    AuditSourceUnavailable,
    ReportError,
    parse_cobertura,
    parse_coverage,
    parse_eslint_json,
    parse_istanbul_summary,
    parse_lcov,
    parse_mypy,
    parse_npm_audit,
    parse_pip_audit,
    parse_ruff_json,
    parse_tsc,
)

pytestmark = pytest.mark.unit

CAPTURED = Path(__file__).parents[2] / "fixtures" / "checks" / "captured"


def captured(name: str) -> str:
    return (CAPTURED / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "fmt", "covered", "total"),
    [
        ("cobertura_pytest_cov_100.xml", "cobertura", 6, 6),
        ("cobertura_pytest_cov_low.xml", "cobertura", 6, 24),
        ("lcov_pytest_cov_100.info", "lcov", 6, 6),
        ("lcov_pytest_cov_low.info", "lcov", 6, 24),
        ("lcov_c8.info", "lcov", 5, 12),
        ("istanbul_c8_summary.json", "istanbul", 5, 12),
    ],
)
def test_coverage_reports_give_the_measured_lines(name, fmt, covered, total):
    coverage = parse_coverage(captured(name), fmt)
    assert (coverage.covered, coverage.total) == (covered, total)
    assert coverage.percent == pytest.approx(100.0 * covered / total)


def test_cobertura_without_totals_counts_line_elements():
    text = captured("cobertura_pytest_cov_low.xml")
    stripped = text.replace('lines-valid="24" lines-covered="6"', "")
    coverage = parse_cobertura(stripped)
    assert (coverage.covered, coverage.total) == (6, 24)


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_cobertura, "<coverage lines-valid='3'", "not valid XML"),
        (parse_cobertura, "<report/>", "root element is <report>"),
        (parse_cobertura, '<coverage lines-valid="0" lines-covered="0"/>', "measured no lines"),
        (parse_cobertura, '<coverage lines-valid="4" lines-covered="9"/>', "cannot be"),
        (parse_lcov, "", "no records"),
        (parse_lcov, "SF:a.py\nLF:x\nend_of_record\n", "non-integer"),
        (parse_istanbul_summary, "{}", "total.lines"),
        (parse_istanbul_summary, "", "empty"),
    ],
)
def test_broken_coverage_reports_are_errors(parser, text, message):
    with pytest.raises(ReportError, match=message):
        parser(text)


def test_truncated_reports_are_errors():
    for name, parser in [
        ("cobertura_pytest_cov_100.xml", parse_cobertura),
        ("istanbul_c8_summary.json", parse_istanbul_summary),
        ("eslint_fail.json", parse_eslint_json),
        ("ruff_fail.json", parse_ruff_json),
        ("npm_audit_vulnerable.json", parse_npm_audit),
        ("pip_audit_vulnerable.json", parse_pip_audit),
    ]:
        text = captured(name)
        with pytest.raises(ReportError):
            parser(text[: len(text) // 2])


def test_eslint_failure_lists_rule_and_relative_path():
    problems = parse_eslint_json(
        captured("eslint_fail.json"), root="/work/main/tests/fixtures/checks/ts_project"
    )
    assert [(p.path, p.line, p.code) for p in problems] == [
        ("broken/pricing.ts", 8, "prefer-const"),
        ("broken/pricing.ts", 8, "@typescript-eslint/no-unused-vars"),
    ]
    assert parse_eslint_json(captured("eslint_pass.json")) == []


def test_eslint_output_of_wrong_shape_is_an_error():
    with pytest.raises(ReportError, match="messages list"):
        parse_eslint_json('[{"filePath": "a.ts"}]')


def test_ruff_failure_counts_each_diagnostic():
    problems = parse_ruff_json(captured("ruff_fail.json"), root="/tmp/pyfix")
    assert {p.code for p in problems} >= {"F401", "F841"}
    assert all(p.path == "broken.py" for p in problems)
    assert parse_ruff_json(captured("ruff_pass.json")) == []


def test_tsc_and_mypy_text_are_counted():
    tsc = parse_tsc(captured("tsc_fail.txt"))
    assert [(p.path, p.line, p.code) for p in tsc] == [
        ("broken/pricing.ts", 9, "TS2322"),
        ("broken/pricing.ts", 13, "TS2322"),
        ("broken/pricing.ts", 14, "TS2322"),
    ]
    mypy = parse_mypy(captured("mypy_fail.txt"))
    assert [p.code for p in mypy] == [
        "assignment",
        "return-value",
        "no-untyped-def",
        "no-any-return",
    ]
    assert parse_mypy("Success: no issues found in 1 source file\n") == []
    assert (
        parse_tsc("error TS5058: The specified path does not exist: 'x.json'.")[0].code == "TS5058"
    )


def test_npm_audit_lists_vulnerable_packages_with_severity():
    findings = parse_npm_audit(captured("npm_audit_vulnerable.json"))
    by_name = {v.package: v for v in findings.vulnerabilities}
    assert by_name["lodash"].severity == "high"
    assert by_name["minimist"].severity == "critical"
    assert "https://github.com/advisories/GHSA-35jh-r3h4-6jhm" in by_name["lodash"].advisories
    assert by_name["lodash"].at_or_above("high")
    assert not by_name["lodash"].at_or_above("critical")
    assert parse_npm_audit(captured("npm_audit_clean.json")).vulnerabilities == []
    assert parse_npm_audit(captured("npm_audit_clean.json")).audited == 120


def test_npm_audit_that_could_not_reach_the_registry_is_unavailable():
    with pytest.raises(AuditSourceUnavailable, match="405 Method Not Allowed"):
        parse_npm_audit(captured("npm_audit_registry_refused.json"))


def test_npm_audit_version_1_report_is_read():
    report = '{"advisories": {"118": {"module_name": "minimist", "severity": "low", "url": "u"}}}'
    [vuln] = parse_npm_audit(report).vulnerabilities
    assert (vuln.package, vuln.severity) == ("minimist", "low")


def test_pip_audit_vulnerabilities_have_no_severity_and_count_as_blocking():
    findings = parse_pip_audit(captured("pip_audit_vulnerable.json"))
    [vuln] = findings.vulnerabilities
    assert (vuln.package, vuln.version, vuln.fix) == ("jinja2", "2.10", "2.10.1")
    assert vuln.severity is None
    assert vuln.at_or_above("critical")
    assert findings.audited == 2
    assert findings.skipped == {}


def test_pip_audit_skips_are_kept_not_dropped():
    findings = parse_pip_audit(captured("pip_audit_pypi_mirror_skipped.json"))
    assert findings.audited == 0
    assert "not found on PyPI" in findings.skipped["idna"]
    with pytest.raises(ReportError, match="dependencies"):
        parse_pip_audit('{"fixes": []}')
