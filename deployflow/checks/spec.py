"""The ``pre_checks:`` section of a service spec: which gates run before anything reaches traffic.

Every check kind has its own optional section. A check that is configured runs unless it carries a
``skip_reason``; a kind with no section is reported as skipped with "not configured", so a missing
gate is visible in the report and the tracking database rather than silently absent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from deployflow.spec_types import Argv, Duration, StrictModel

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GITHUB_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")

CoverageFormat = Literal["cobertura", "lcov", "istanbul"]
ProblemFormat = Literal["eslint-json", "ruff-json", "tsc", "mypy", "exit-code"]
Severity = Literal["low", "moderate", "high", "critical"]


class CheckBase(StrictModel):
    """Settings shared by every check kind."""

    timeout: Duration = Field(
        default=600.0,
        description=(
            "Longest the check may run, like '90s' or '10m'; past it the check is an error."
        ),
    )
    required: bool = Field(
        default=True,
        description=(
            "A required check blocks the deploy when it fails; an advisory one (false) is reported "
            "as advisory_failed and does not block."
        ),
    )
    skip_reason: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Set to skip this check; the reason is recorded in the report and the tracking "
            "database. A check is never skipped without one."
        ),
    )


class CommandCheck(CheckBase):
    """A check that runs one command in the service checkout."""

    command: Argv = Field(
        description=(
            "The command as an argv list, run in the checkout without a shell, e.g. "
            "['npx', 'eslint', '--format', 'json', 'src']."
        )
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra environment variables for the command. The command otherwise sees only a small "
            "allowlist of the runner's environment (PATH, HOME, LANG, CA and proxy settings)."
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"environment variable name {name!r} is invalid; use letters, digits and '_', "
                    "not starting with a digit"
                )
        return value


class CoverageReportSpec(StrictModel):
    """Where the test command writes its coverage report and what it must reach."""

    path: Path = Field(
        description="Coverage report written by the test command, relative to the checkout."
    )
    format: CoverageFormat = Field(
        description=(
            "'cobertura' (XML, e.g. pytest-cov --cov-report=xml), 'lcov' (lcov.info) or "
            "'istanbul' (NYC/c8 coverage-summary.json)."
        )
    )
    threshold: float = Field(
        default=80.0,
        ge=0.0,
        le=100.0,
        description="Minimum line coverage in percent (80 means 80%); below it the check fails.",
    )

    @field_validator("threshold")
    @classmethod
    def _percent_not_fraction(cls, value: float) -> float:
        if 0.0 < value < 1.0:
            raise ValueError(
                f"{value:g} would mean {value:g}% coverage: the threshold is in percent, so write "
                f"{value * 100:g} for {value * 100:g}%"
            )
        return value


class TestsCheck(CommandCheck):
    """Run the test suite, then read the coverage report it wrote."""

    __test__ = False  # pytest: a spec model, not a test class

    coverage: CoverageReportSpec | None = Field(
        default=None,
        description=(
            "Coverage report to read after the tests pass; omit to check the exit code only."
        ),
    )


class ProblemsCheck(CommandCheck):
    """A lint or type check: the exit code decides, the output gives the count of problems."""

    output_format: ProblemFormat = Field(
        default="exit-code",
        description=(
            "How to count problems in the output: 'eslint-json' (eslint --format json), "
            "'ruff-json' "
            "(ruff check --output-format json), 'tsc' (tsc --noEmit text), 'mypy' (mypy text) or "
            "'exit-code' (no count)."
        ),
    )


class BuildCheck(CommandCheck):
    """The build command succeeds."""


class AuditCheck(CommandCheck):
    """A dependency audit whose JSON report is parsed for vulnerabilities."""

    tool: Literal["npm", "pip"] = Field(
        description="'npm' reads `npm audit --json`; 'pip' reads `pip-audit -f json`."
    )
    severity: Severity = Field(
        default="high",
        description=(
            "Fail on vulnerabilities at or above this severity. pip-audit reports no severity, so "
            "every pip vulnerability counts as at or above it."
        ),
    )
    allow_unaudited: list[str] = Field(
        default_factory=list,
        description=(
            "pip only: package names pip-audit may skip (e.g. the service's own unpublished "
            "package). Any other skipped dependency makes the audit an error, because a skip "
            "usually means the advisory source could not be asked."
        ),
    )


class ReviewCheck(CheckBase):
    """The pull request(s) containing the deployed commit are approved on GitHub."""

    repo: str = Field(description="GitHub repository as 'owner/name'.")
    base_url: str = Field(
        default="https://api.github.com",
        description=(
            "GitHub REST API root; for GitHub Enterprise Server use 'https://HOST/api/v3'."
        ),
    )
    required_approvals: int = Field(
        default=1,
        ge=1,
        description="Approvals needed from reviewers other than the author.",
    )
    credentials_block: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Name of the deployflow GitHub credentials block holding the token; the flow loads "
            "it (GITHUB_TOKEN is the fallback where no block is named). Omit both for public "
            "repositories (unauthenticated rate limits apply)."
        ),
    )
    timeout: Duration = Field(
        default=60.0,
        description="Longest all GitHub requests of this check may take together, like '30s'.",
    )

    @field_validator("repo")
    @classmethod
    def _repo_shape(cls, value: str) -> str:
        if not _GITHUB_REPO.match(value):
            raise ValueError(f"repo {value!r} must look like 'owner/name'")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"base_url {value!r} must start with https:// (or http:// for tests)")
        return value.rstrip("/")


class ChangelogCheck(CheckBase):
    """The changelog changed since the deployed ref, or has a section naming the new version."""

    path: Path = Field(
        default=Path("CHANGELOG.md"), description="Changelog file relative to the checkout."
    )
    timeout: Duration = Field(
        default=60.0, description="Longest the git commands of this check may take, like '30s'."
    )


class PreChecksSpec(StrictModel):
    """Step 1 of a deploy: the gates that must pass before the new version is started."""

    spec_relative_paths: ClassVar[tuple[str, ...]] = ("checkout",)

    checkout: Path = Field(
        description=(
            "The service's source checkout the checks run in (resolved relative to the spec file "
            "by the loader)."
        )
    )
    tests: TestsCheck | None = Field(default=None, description="Test suite and coverage gate.")
    lint: ProblemsCheck | None = Field(default=None, description="Linter gate.")
    typecheck: ProblemsCheck | None = Field(default=None, description="Type checker gate.")
    build: BuildCheck | None = Field(default=None, description="Build gate.")
    audit: AuditCheck | None = Field(default=None, description="Dependency audit gate.")
    review: ReviewCheck | None = Field(default=None, description="Code review approval gate.")
    changelog: ChangelogCheck | None = Field(default=None, description="Changelog gate.")

    @model_validator(mode="after")
    def _one_check_at_least(self) -> PreChecksSpec:
        if all(getattr(self, kind) is None for kind in CHECK_KINDS):
            raise ValueError(
                "pre_checks configures no check; configure at least one of "
                + ", ".join(CHECK_KINDS)
            )
        return self


# Fixed order of the report table.
CHECK_KINDS: tuple[str, ...] = (
    "tests",
    "lint",
    "typecheck",
    "build",
    "audit",
    "review",
    "changelog",
)
