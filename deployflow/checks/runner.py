"""Run the pre-deployment checks: one at a time (one Prefect task each) or all concurrently.

A check never raises: whatever goes wrong becomes a ``CheckResult`` with status error, because a
check that cannot tell is a reason to stop the deploy, not a crash of the step.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from deployflow.checks.context import CheckContext
from deployflow.checks.parsers import (
    AuditFindings,
    Problem,
    ReportError,
    parse_coverage,
    parse_eslint_json,
    parse_mypy,
    parse_npm_audit,
    parse_pip_audit,
    parse_ruff_json,
    parse_tsc,
)
from deployflow.checks.process import CommandOutcome, controlled_env, output_tail, run_command
from deployflow.checks.result import CheckResult, CheckStatus, PreCheckReport
from deployflow.checks.review import GitHubError, GitHubReviews
from deployflow.checks.spec import (
    CHECK_KINDS,
    AuditCheck,
    BuildCheck,
    ChangelogCheck,
    CheckBase,
    CommandCheck,
    PreChecksSpec,
    ProblemsCheck,
    ReviewCheck,
    TestsCheck,
)

FIRST_PROBLEMS = 10
# Filesystem timestamps can trail time.time() by a clock tick; a report older than this margin
# before the command started was left by an earlier run.
STALE_MARGIN_SECONDS = 1.0
_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}^~-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def planned_checks(spec: PreChecksSpec) -> list[str]:
    """Every check kind, in report order; unconfigured ones will report skipped with a reason."""
    del spec  # all kinds are planned so a missing gate shows up as a skipped row, never silently
    return list(CHECK_KINDS)


def run_check(kind: str, spec: PreChecksSpec, ctx: CheckContext) -> CheckResult:
    """Run one check and return its evidence; never raises for check failures.

    Args:
        kind: One of ``CHECK_KINDS``.
        spec: The service's ``pre_checks`` section.
        ctx: The deploy being checked.

    Returns:
        The result; advisory checks that fail come back as advisory_failed.

    Raises:
        ValueError: ``kind`` is not a check kind (a programming error, not a check outcome).
    """
    if kind not in CHECK_KINDS:
        raise ValueError(f"unknown check kind {kind!r}; expected one of {', '.join(CHECK_KINDS)}")
    section: CheckBase | None = getattr(spec, kind)
    if section is None:
        return CheckResult(
            name=kind,
            status=CheckStatus.SKIPPED,
            reason=f"not configured (no pre_checks.{kind} section in the service spec)",
            required=False,
        )
    if section.skip_reason:
        return CheckResult(
            name=kind,
            status=CheckStatus.SKIPPED,
            reason=section.skip_reason,
            required=section.required,
        )
    checkout = ctx.checkout or spec.checkout
    started = time.monotonic()
    try:
        result = _RUNNERS[kind](section, checkout, ctx)
    except Exception as exc:  # the step must report, not crash; the message carries no secrets
        result = _error(kind, f"the check itself failed: {type(exc).__name__}: {exc}")
    result = result.model_copy(
        update={"duration_seconds": time.monotonic() - started, "required": section.required}
    )
    if not section.required and result.status in (CheckStatus.FAILED, CheckStatus.ERROR):
        details = {**result.details, "outcome": result.status.value}
        result = result.model_copy(
            update={"status": CheckStatus.ADVISORY_FAILED, "details": details}
        )
    return result


def run_all(spec: PreChecksSpec, ctx: CheckContext) -> PreCheckReport:
    """Run every planned check concurrently in threads and gather the report.

    The work is waiting on subprocesses and sockets, so threads give the concurrency; each check
    keeps its own timeout.
    """
    kinds = planned_checks(spec)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(kinds), thread_name_prefix="precheck") as pool:
        results = list(pool.map(lambda kind: run_check(kind, spec, ctx), kinds))
    return PreCheckReport(results=results, wall_seconds=time.monotonic() - started)


# ------------------------------------------------------------------------------------ helpers


def _error(kind: str, reason: str, **fields: Any) -> CheckResult:
    return CheckResult(name=kind, status=CheckStatus.ERROR, reason=reason, **fields)


def _run(section: CommandCheck, checkout: Path, ctx: CheckContext) -> CommandOutcome:
    if not checkout.is_dir():
        return CommandOutcome(
            argv=tuple(section.command),
            returncode=None,
            stdout="",
            stderr="",
            duration_seconds=0.0,
            launch_error=f"checkout {checkout} is not a directory",
        )
    return run_command(
        list(section.command),
        cwd=checkout,
        timeout=section.timeout,
        env=controlled_env(section.env, ctx.environ),
    )


def _did_not_finish(
    kind: str, section: CommandCheck, outcome: CommandOutcome
) -> CheckResult | None:
    """An error result when the command could not start or ran out of time, else None."""
    if outcome.launch_error:
        return _error(kind, outcome.launch_error, figure="not run")
    if outcome.timed_out:
        return _error(
            kind,
            f"{section.command[0]} did not finish within {section.timeout:g}s and was killed",
            figure="timed out",
            output_tail=outcome.tail(),
        )
    return None


def _problem_lines(problems: list[Problem]) -> str:
    shown = [str(problem) for problem in problems[:FIRST_PROBLEMS]]
    if len(problems) > FIRST_PROBLEMS:
        shown.append(f"... and {len(problems) - FIRST_PROBLEMS} more")
    return "\n".join(shown)


def _floor1(value: float) -> float:
    # Round down so 79.96% is never displayed as a passing-looking "80.0%".
    return math.floor(value * 10) / 10


# --------------------------------------------------------------------------------------- tests


def _tests(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    assert isinstance(section, TestsCheck)
    wall_started = time.time()
    outcome = _run(section, checkout, ctx)
    if (unfinished := _did_not_finish("tests", section, outcome)) is not None:
        return unfinished
    details: dict[str, Any] = {"exit_code": outcome.returncode}
    coverage_figure = ""
    coverage_problem = ""
    if section.coverage is not None:
        report = checkout / section.coverage.path
        try:
            if report.stat().st_mtime < wall_started - STALE_MARGIN_SECONDS:
                raise ReportError(
                    f"{section.coverage.path} predates this run; the test command did not write it"
                )
            coverage = parse_coverage(
                report.read_text(encoding="utf-8", errors="replace"), section.coverage.format
            )
            percent = _floor1(coverage.percent)
            coverage_figure = f"{percent:.1f}% coverage"
            details.update(
                coverage_percent=round(coverage.percent, 2),
                lines_covered=coverage.covered,
                lines_total=coverage.total,
                threshold=section.coverage.threshold,
            )
        except FileNotFoundError:
            coverage_problem = f"coverage report {section.coverage.path} was not written"
        except (OSError, ReportError) as exc:
            coverage_problem = f"coverage report {section.coverage.path} is unusable: {exc}"
    if not outcome.succeeded:
        figure = ", ".join(part for part in (f"exit {outcome.returncode}", coverage_figure) if part)
        return CheckResult(
            name="tests",
            status=CheckStatus.FAILED,
            figure=figure,
            reason=f"the test command failed (exit {outcome.returncode})",
            output_tail=outcome.tail(),
            details=details,
        )
    if section.coverage is None:
        return CheckResult(
            name="tests",
            status=CheckStatus.PASSED,
            figure="exit 0",
            reason="tests passed (no coverage gate configured)",
            details=details,
        )
    if coverage_problem:
        return _error(
            "tests",
            coverage_problem,
            figure="no coverage",
            output_tail=outcome.tail(),
            details=details,
        )
    threshold = section.coverage.threshold
    percent_text = coverage_figure.split()[0]
    if details["coverage_percent"] < threshold:
        return CheckResult(
            name="tests",
            status=CheckStatus.FAILED,
            figure=coverage_figure,
            reason=f"line coverage {percent_text} is below the {threshold:g}% threshold",
            output_tail=outcome.tail(),
            details=details,
        )
    return CheckResult(
        name="tests",
        status=CheckStatus.PASSED,
        figure=coverage_figure,
        reason=f"tests passed with coverage at or above {threshold:g}%",
        details=details,
    )


# ------------------------------------------------------------------------- lint and type check

_PROBLEM_PARSERS: dict[str, Callable[[str, str], list[Problem]]] = {
    "eslint-json": lambda text, root: parse_eslint_json(text, root),
    "ruff-json": lambda text, root: parse_ruff_json(text, root),
    "tsc": lambda text, root: parse_tsc(text),
    "mypy": lambda text, root: parse_mypy(text),
}


def _problems(kind: str) -> Callable[[CheckBase, Path, CheckContext], CheckResult]:
    def check(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
        assert isinstance(section, ProblemsCheck)
        outcome = _run(section, checkout, ctx)
        if (unfinished := _did_not_finish(kind, section, outcome)) is not None:
            return unfinished
        details: dict[str, Any] = {"exit_code": outcome.returncode}
        if section.output_format == "exit-code":
            if outcome.succeeded:
                return CheckResult(
                    name=kind,
                    status=CheckStatus.PASSED,
                    figure="exit 0",
                    reason=f"{section.command[0]} exited 0",
                    details=details,
                )
            return CheckResult(
                name=kind,
                status=CheckStatus.FAILED,
                figure=f"exit {outcome.returncode}",
                reason=f"{section.command[0]} exited {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        try:
            problems = _PROBLEM_PARSERS[section.output_format](
                outcome.stdout, str(checkout.resolve())
            )
        except ReportError as exc:
            return _error(
                kind,
                f"{section.command[0]} exited {outcome.returncode} "
                f"without a readable report: {exc}",
                figure=f"exit {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        errors = sum(1 for problem in problems if problem.severity == "error")
        details.update(
            problems=len(problems),
            errors=errors,
            first=[str(problem) for problem in problems[:FIRST_PROBLEMS]],
        )
        noun = "problem" if len(problems) == 1 else "problems"
        figure = f"{len(problems)} {noun}"
        if outcome.succeeded:
            return CheckResult(
                name=kind,
                status=CheckStatus.PASSED,
                figure=figure,
                reason=f"{section.command[0]} exited 0"
                + (f" ({len(problems)} warnings do not block)" if problems else ""),
                details=details,
            )
        if not problems:
            # Non-zero exit with nothing countable: the tool crashed or was misconfigured.
            return _error(
                kind,
                f"{section.command[0]} exited {outcome.returncode} but reported no problems; "
                "it probably crashed or was misconfigured",
                figure=f"exit {outcome.returncode}",
                output_tail=outcome.tail(),
                details=details,
            )
        return CheckResult(
            name=kind,
            status=CheckStatus.FAILED,
            figure=figure,
            reason=f"{section.command[0]} found {figure} (exit {outcome.returncode})",
            output_tail=_problem_lines(problems),
            details=details,
        )

    return check


# --------------------------------------------------------------------------------------- build


def _build(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    assert isinstance(section, BuildCheck)
    outcome = _run(section, checkout, ctx)
    if (unfinished := _did_not_finish("build", section, outcome)) is not None:
        return unfinished
    details = {"exit_code": outcome.returncode}
    if outcome.succeeded:
        return CheckResult(
            name="build",
            status=CheckStatus.PASSED,
            figure="exit 0",
            reason="the build succeeded",
            details=details,
        )
    return CheckResult(
        name="build",
        status=CheckStatus.FAILED,
        figure=f"exit {outcome.returncode}",
        reason=f"the build command failed (exit {outcome.returncode})",
        output_tail=outcome.tail(),
        details=details,
    )


# --------------------------------------------------------------------------------------- audit


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _audit(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    assert isinstance(section, AuditCheck)
    outcome = _run(section, checkout, ctx)
    if (unfinished := _did_not_finish("audit", section, outcome)) is not None:
        return unfinished
    tool = "npm audit" if section.tool == "npm" else "pip-audit"
    details: dict[str, Any] = {"exit_code": outcome.returncode, "tool": section.tool}
    try:
        findings: AuditFindings = (
            parse_npm_audit(outcome.stdout)
            if section.tool == "npm"
            else parse_pip_audit(outcome.stdout)
        )
    except ReportError as exc:
        last = output_tail(outcome.stderr, lines=1)
        return _error(
            "audit",
            f"{tool} gave no usable report (exit {outcome.returncode}): {exc}"
            + (f"; last message: {last}" if last else ""),
            figure="no report",
            output_tail=outcome.tail(),
            details=details,
        )
    allowed = {_normalise(name) for name in section.allow_unaudited}
    unaudited = {
        name: why for name, why in findings.skipped.items() if _normalise(name) not in allowed
    }
    blocking = [vuln for vuln in findings.vulnerabilities if vuln.at_or_above(section.severity)]
    details.update(
        vulnerabilities=[str(vuln) for vuln in findings.vulnerabilities],
        at_or_above_threshold=len(blocking),
        severity=section.severity,
        audited=findings.audited,
        unaudited=unaudited,
    )
    if unaudited:
        names = ", ".join(sorted(unaudited)[:5])
        return _error(
            "audit",
            f"{tool} could not audit {len(unaudited)} dependencies ({names}); the advisory source "
            "was probably unreachable, so no verdict",
            figure=f"{len(unaudited)} not audited",
            output_tail="\n".join(f"{name}: {why}" for name, why in unaudited.items()),
            details=details,
        )
    if blocking:
        noun = "vulnerability" if len(blocking) == 1 else "vulnerabilities"
        return CheckResult(
            name="audit",
            status=CheckStatus.FAILED,
            figure=f"{len(blocking)} {noun} >= {section.severity}",
            reason=f"{tool} found {len(blocking)} {noun} at or above {section.severity}",
            output_tail="\n".join(str(vuln) for vuln in blocking[:FIRST_PROBLEMS]),
            details=details,
        )
    if outcome.returncode != 0 and not findings.vulnerabilities:
        return _error(
            "audit",
            f"{tool} exited {outcome.returncode} yet reported nothing; refusing to call that clean",
            figure=f"exit {outcome.returncode}",
            output_tail=outcome.tail(),
            details=details,
        )
    below = len(findings.vulnerabilities)
    return CheckResult(
        name="audit",
        status=CheckStatus.PASSED,
        figure=f"0 >= {section.severity}" + (f" ({below} below)" if below else ""),
        reason=f"no vulnerabilities at or above {section.severity}",
        details=details,
    )


# -------------------------------------------------------------------------------------- review


def _resolve_sha(ref: str, checkout: Path, ctx: CheckContext, timeout: float) -> str:
    if _SHA.match(ref):
        return ref
    if not _SAFE_REF.match(ref):
        raise ValueError(f"ref {ref!r} is not a valid git ref")
    outcome = run_command(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=checkout,
        timeout=timeout,
        env=controlled_env({}, ctx.environ),
    )
    sha = outcome.stdout.strip()
    if not outcome.succeeded or not _SHA.match(sha):
        raise ValueError(f"ref {ref!r} does not name a commit in {checkout}")
    return sha


def _review(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    assert isinstance(section, ReviewCheck)
    deadline = time.monotonic() + section.timeout
    if section.token_secret_block and ctx.github_token is None:
        return _error(
            "review",
            f"the Secret block {section.token_secret_block!r} is configured but no token was given",
            figure="no token",
        )
    try:
        sha = _resolve_sha(ctx.new_ref, checkout, ctx, section.timeout)
    except ValueError as exc:
        return _error("review", str(exc), figure="no commit")
    client = ctx.github_client or httpx.Client(transport=ctx.github_transport)
    try:
        github = GitHubReviews(
            client,
            base_url=section.base_url,
            repo=section.repo,
            token=ctx.github_token,
            deadline=deadline,
        )
        pulls = github.pull_requests_for(sha)
        if not pulls:
            return CheckResult(
                name="review",
                status=CheckStatus.FAILED,
                figure="no pull request",
                reason=f"no pull request in {section.repo} contains commit {sha[:12]}; "
                "it was never reviewed",
                details={"commit": sha},
            )
        verdicts = [github.review_of(pull) for pull in pulls]
    except GitHubError as exc:
        return _error("review", str(exc), figure="unknown", details={"commit": sha})
    finally:
        if ctx.github_client is None:
            client.close()
    required = section.required_approvals
    lines = [verdict.describe(required) for verdict in verdicts]
    details = {
        "commit": sha,
        "pull_requests": [
            {
                "number": verdict.number,
                "url": verdict.url,
                "author": verdict.author,
                "approvers": list(verdict.approvers),
                "changes_requested_by": list(verdict.changes_requested_by),
            }
            for verdict in verdicts
        ],
    }
    unapproved = [verdict for verdict in verdicts if not verdict.approved(required)]
    numbers = ", ".join(f"#{verdict.number}" for verdict in verdicts)
    if unapproved:
        return CheckResult(
            name="review",
            status=CheckStatus.FAILED,
            figure=f"{len(unapproved)}/{len(verdicts)} PRs not approved",
            reason="not approved: " + "; ".join(v.describe(required) for v in unapproved),
            output_tail="\n".join(lines),
            details=details,
        )
    fewest = min(len(verdict.approvers) for verdict in verdicts)
    return CheckResult(
        name="review",
        status=CheckStatus.PASSED,
        figure=f"{fewest}/{required} approvals ({numbers})",
        reason="approved by reviewers other than the author, no changes requested",
        details=details,
    )


# ----------------------------------------------------------------------------------- changelog


def has_version_section(text: str, version: str) -> bool:
    """True when a markdown heading names ``version`` ("## [1.4.0] - 2024-05-01", "# v1.4.0")."""
    pattern = re.compile(
        rf"^#{{1,6}}\s*\[?v?{re.escape(version.removeprefix('v'))}\]?(?=$|[\s\]\)])",
        re.MULTILINE,
    )
    return bool(pattern.search(text))


def _changelog(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    assert isinstance(section, ChangelogCheck)
    path = checkout / section.path
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        return _error(
            "changelog", f"cannot read {section.path}: {exc.strerror}", figure="unreadable"
        )
    section_found = text is not None and has_version_section(text, ctx.version)
    details: dict[str, Any] = {"version": ctx.version, "section_found": section_found}
    changed: bool | None = None
    if ctx.previous_ref is not None:
        for ref in (ctx.previous_ref, ctx.new_ref):
            if not _SAFE_REF.match(ref):
                return _error("changelog", f"ref {ref!r} is not a valid git ref", figure="bad ref")
        outcome = run_command(
            ["git", "diff", "--name-only", ctx.previous_ref, ctx.new_ref, "--", str(section.path)],
            cwd=checkout,
            timeout=section.timeout,
            env=controlled_env({}, ctx.environ),
        )
        if not outcome.succeeded:
            return _error(
                "changelog",
                f"git could not compare {ctx.previous_ref}..{ctx.new_ref}: "
                f"{output_tail(outcome.stderr or outcome.launch_error or '', lines=1)}",
                figure="unknown",
                output_tail=outcome.tail(),
                details=details,
            )
        changed = bool(outcome.stdout.strip())
        details.update(changed=changed, previous_ref=ctx.previous_ref, new_ref=ctx.new_ref)
    if section_found or changed:
        figure = f"section {ctx.version}" if section_found else f"changed since {ctx.previous_ref}"
        return CheckResult(
            name="changelog",
            status=CheckStatus.PASSED,
            figure=figure,
            reason=f"{section.path} "
            + (f"names {ctx.version}" if section_found else f"changed since {ctx.previous_ref}"),
            details=details,
        )
    if text is None:
        reason = f"{section.path} does not exist"
    elif changed is None:
        reason = (
            f"{section.path} has no section for {ctx.version} and there is no deployed ref to "
            "compare with"
        )
    else:
        reason = (
            f"{section.path} has no section for {ctx.version} and did not change since "
            f"{ctx.previous_ref}"
        )
    return CheckResult(
        name="changelog",
        status=CheckStatus.FAILED,
        figure="not updated",
        reason=reason,
        details=details,
    )


_RUNNERS: dict[str, Callable[[CheckBase, Path, CheckContext], CheckResult]] = {
    "tests": _tests,
    "lint": _problems("lint"),
    "typecheck": _problems("typecheck"),
    "build": _build,
    "audit": _audit,
    "review": _review,
    "changelog": _changelog,
}


def resolve_commit(ref: str, checkout: Path, timeout: float = 10.0) -> str | None:
    """The commit SHA ``ref`` names in ``checkout``, or None when it names none (or no git)."""
    try:
        return _resolve_sha(ref, checkout, CheckContext(version="-"), timeout)
    except ValueError:
        return None
