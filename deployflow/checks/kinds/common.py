"""What several check kinds share: running a check's command, error results, git refs."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployflow.checks.context import CheckContext
from deployflow.checks.process import CommandOutcome, controlled_env, run_command
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import CheckBase, CommandCheck

CheckFunction = Callable[[CheckBase, Path, CheckContext], CheckResult]
"""One kind's check: its spec section, the checkout to run in, the deploy; returns the result."""

FIRST_PROBLEMS = 10
SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}^~-]*$")
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


def error_result(kind: str, reason: str, **fields: Any) -> CheckResult:
    """A result with status error: the check could not tell whether the gate holds."""
    return CheckResult(name=kind, status=CheckStatus.ERROR, reason=reason, **fields)


def run_in_checkout(section: CommandCheck, checkout: Path, ctx: CheckContext) -> CommandOutcome:
    """Run the section's command in ``checkout`` with its timeout and the controlled environment."""
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


def did_not_finish(kind: str, section: CommandCheck, outcome: CommandOutcome) -> CheckResult | None:
    """An error result when the command could not start or ran out of time, else None."""
    if outcome.launch_error:
        return error_result(kind, outcome.launch_error, figure="not run")
    if outcome.timed_out:
        return error_result(
            kind,
            f"{section.command[0]} did not finish within {section.timeout:g}s and was killed",
            figure="timed out",
            output_tail=outcome.tail(),
        )
    return None


def resolve_sha(ref: str, checkout: Path, ctx: CheckContext, timeout: float) -> str:
    """The full commit SHA ``ref`` names in ``checkout``.

    Raises:
        ValueError: ``ref`` is not a safe git ref, or names no commit there.
    """
    if FULL_SHA.match(ref):
        return ref
    if not SAFE_REF.match(ref):
        raise ValueError(f"ref {ref!r} is not a valid git ref")
    outcome = run_command(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=checkout,
        timeout=timeout,
        env=controlled_env({}, ctx.environ),
    )
    sha = outcome.stdout.strip()
    if not outcome.succeeded or not FULL_SHA.match(sha):
        raise ValueError(f"ref {ref!r} does not name a commit in {checkout}")
    return sha


def resolve_commit(ref: str, checkout: Path, timeout: float = 10.0) -> str | None:
    """The commit SHA ``ref`` names in ``checkout``, or None when it names none (or no git)."""
    try:
        return resolve_sha(ref, checkout, CheckContext(version="-"), timeout)
    except ValueError:
        return None
