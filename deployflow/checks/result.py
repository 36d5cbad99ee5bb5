"""What a check found: one ``CheckResult`` per check, gathered in a ``PreCheckReport``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from deployflow.spec_types import format_duration


class CheckStatus(StrEnum):
    """Outcome of one check, as stored in the tracking database's check_results.status."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"
    ADVISORY_FAILED = "advisory_failed"


# Statuses that stop the deploy.
BLOCKING = frozenset({CheckStatus.FAILED, CheckStatus.ERROR})


class CheckResult(BaseModel):
    """The evidence one check produced.

    Attributes:
        name: Check kind ("tests", "lint", ...).
        status: passed / failed / error / skipped / advisory_failed.
        figure: The measured figure, e.g. "83.4% coverage" or "3 problems".
        reason: One line explaining the status.
        output_tail: Last lines of the tool's output (or the first problems), for failures.
        duration_seconds: Wall time of the check.
        required: False for advisory checks.
        details: JSON-serialisable specifics (problems, vulnerabilities, pull requests...).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    status: CheckStatus
    figure: str = ""
    reason: str
    output_tail: str = ""
    duration_seconds: float = 0.0
    required: bool = True
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """True when this result stops the deploy."""
        return self.status in BLOCKING

    def to_record(self) -> dict[str, Any]:
        """Columns for the tracking database's check_results row (step is the caller's)."""
        details = dict(self.details)
        details["required"] = self.required
        details["output_tail"] = self.output_tail
        return {
            "name": self.name,
            "status": self.status.value,
            "figure": self.figure,
            "reason": self.reason,
            "duration_seconds": self.duration_seconds,
            "details": details,
        }


def _cell(text: str) -> str:
    # A pipe or newline would break the markdown table row.
    return text.replace("|", "\\|").replace("\n", " ")


class PreCheckReport(BaseModel):
    """All results of step 1, in the fixed check order."""

    model_config = ConfigDict(frozen=True)

    results: list[CheckResult]
    wall_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when no result blocks the deploy (failed or error in a required check)."""
        return not any(result.blocks for result in self.results)

    @property
    def blocking(self) -> list[CheckResult]:
        """The results that stop the deploy."""
        return [result for result in self.results if result.blocks]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for ``deployflow checks --json``."""
        return {
            "passed": self.passed,
            "wall_seconds": round(self.wall_seconds, 3),
            "results": [result.model_dump(mode="json") for result in self.results],
        }

    def to_markdown(self) -> str:
        """Table of check, status, figure and duration; then the evidence of each failure."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"## Pre-deployment checks: {verdict}",
            "",
            "| Check | Status | Figure | Duration |",
            "| --- | --- | --- | --- |",
        ]
        for result in self.results:
            status = result.status.value
            if result.status is CheckStatus.SKIPPED:
                status = f"skipped ({result.reason})"
            lines.append(
                f"| {_cell(result.name)} | {_cell(status)} | {_cell(result.figure)} | "
                f"{format_duration(round(result.duration_seconds, 2) or 0.001)} |"
            )
        for result in self.results:
            if result.status not in (*BLOCKING, CheckStatus.ADVISORY_FAILED):
                continue
            lines += ["", f"### {result.name}: {result.status.value}", "", result.reason]
            if result.output_tail:
                # A fence longer than any backtick run inside keeps tool output from closing it.
                fence = "`" * max(3, _longest_backtick_run(result.output_tail) + 1)
                lines += ["", f"{fence}text", result.output_tail.rstrip("\n"), fence]
        return "\n".join(lines) + "\n"


def _longest_backtick_run(text: str) -> int:
    longest = current = 0
    for char in text:
        current = current + 1 if char == "`" else 0
        longest = max(longest, current)
    return longest
