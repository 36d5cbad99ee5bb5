"""The pre_checks section: bad input names the field and what is allowed."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployflow.checks.spec import PreChecksSpec

pytestmark = pytest.mark.unit


def spec(**sections):
    return PreChecksSpec.model_validate({"checkout": ".", **sections})


def test_a_full_section_parses_durations_and_defaults():
    parsed = spec(
        tests={
            "command": ["pytest", "--cov"],
            "timeout": "10m",
            "coverage": {"path": "coverage.xml", "format": "cobertura"},
        },
        audit={"tool": "npm", "command": ["npm", "audit", "--json"]},
        review={"repo": "acme/shop", "credentials_block": "github-token"},
    )
    assert parsed.tests is not None
    assert parsed.tests.timeout == 600.0
    assert parsed.tests.coverage is not None
    assert parsed.tests.coverage.threshold == 80.0
    assert parsed.audit is not None
    assert parsed.audit.severity == "high"
    assert parsed.review is not None
    assert parsed.review.base_url == "https://api.github.com"
    assert parsed.review.required_approvals == 1
    assert parsed.tests.required is True


@pytest.mark.parametrize(
    ("sections", "field", "message"),
    [
        ({"lint": {"command": "ruff check ."}}, "lint.command", "never shell strings"),
        ({"lint": {"command": []}}, "lint.command", "at least 1"),
        ({"lint": {"command": ["ruff"], "env": {"1BAD": "x"}}}, "lint.env", "1BAD"),
        ({"lint": {"command": ["ruff"], "skip_reason": ""}}, "lint.skip_reason", "at least 1"),
        ({"lint": {"command": ["ruff"], "timeout": 30}}, "lint.timeout", "'30s'"),
        ({"lint": {"command": ["ruff"], "colour": "red"}}, "lint.colour", "Extra inputs"),
        ({"audit": {"tool": "cargo", "command": ["x"]}}, "audit.tool", "'npm' or 'pip'"),
        (
            {"audit": {"tool": "npm", "command": ["x"], "severity": "urgent"}},
            "audit.severity",
            "'low', 'moderate', 'high' or 'critical'",
        ),
        ({"review": {"repo": "shop"}}, "review.repo", "owner/name"),
        ({"review": {"repo": "a/b", "base_url": "ftp://x"}}, "review.base_url", "https://"),
        (
            {"review": {"repo": "a/b", "required_approvals": 0}},
            "review.required_approvals",
            "greater than or equal to 1",
        ),
        (
            {"tests": {"command": ["t"], "coverage": {"path": "c", "format": "xml"}}},
            "tests.coverage.format",
            "'cobertura', 'lcov' or 'istanbul'",
        ),
        (
            {
                "tests": {
                    "command": ["t"],
                    "coverage": {"path": "c", "format": "lcov", "threshold": 120},
                }
            },
            "tests.coverage.threshold",
            "less than or equal to 100",
        ),
    ],
)
def test_bad_input_names_the_field(sections, field, message):
    with pytest.raises(ValidationError) as caught:
        spec(**sections)
    error = caught.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert message in str(caught.value)


def test_a_section_with_no_check_is_refused():
    with pytest.raises(ValidationError, match="configure at least one of tests, lint"):
        spec()


def test_every_check_kind_has_exactly_one_check_in_report_order():
    from deployflow.checks.runner import CHECKS_BY_KIND
    from deployflow.checks.spec import CHECK_KINDS

    assert tuple(CHECKS_BY_KIND) == tuple(CHECK_KINDS)
