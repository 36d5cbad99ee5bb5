"""Gates decide on exact figures and refuse to call "nothing examined" a pass."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from deployflow.checks import CheckContext, CheckStatus, PreChecksSpec, run_check
from deployflow.spec import SpecError, parse_spec

CTX = CheckContext(version="v2", new_ref="HEAD", previous_ref=None)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_coverage_just_under_the_threshold_fails_even_though_it_rounds_to_it(tmp_path: Path):
    lcov = "TN:\\nSF:app.py\\nLH:79996\\nLF:100000\\nend_of_record\\n"
    spec = PreChecksSpec.model_validate(
        {
            "checkout": str(tmp_path),
            "tests": {
                "command": python(f"open('lcov.info', 'w').write('{lcov}')"),
                "coverage": {"path": "lcov.info", "format": "lcov", "threshold": 80},
            },
        }
    )
    result = run_check("tests", spec, CTX)
    assert result.status is CheckStatus.FAILED
    assert result.figure == "79.9% coverage"
    assert result.reason == "line coverage 79.9% is below the 80% threshold"


def test_a_coverage_threshold_written_as_a_fraction_is_refused_with_the_fix() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(
            {
                "service": "x",
                "pre_checks": {
                    "checkout": ".",
                    "tests": {
                        "command": ["pytest"],
                        "coverage": {"path": "c", "format": "lcov", "threshold": 0.8},
                    },
                },
            }
        )
    messages = dict(error.value.problems)
    assert messages["pre_checks.tests.coverage.threshold"] == (
        "0.8 would mean 0.8% coverage: the threshold is in percent, so write 80 for 80%"
    )


def test_an_audit_that_examined_no_dependency_has_no_verdict(tmp_path: Path):
    spec = PreChecksSpec.model_validate(
        {
            "checkout": str(tmp_path),
            "audit": {"tool": "pip", "command": python("print('{\"dependencies\": []}')")},
        }
    )
    result = run_check("audit", spec, CTX)
    assert result.status is CheckStatus.ERROR
    assert result.figure == "0 audited"
    assert "examined no dependencies" in result.reason
