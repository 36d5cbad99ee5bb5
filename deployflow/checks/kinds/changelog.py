"""The changelog check: the changelog names the deployed version, or changed since the last deploy.

Either is taken as evidence the release was written up; the comparison needs git and a previous
ref, so a first deploy must name the version.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import SAFE_REF, error_result
from deployflow.checks.process import controlled_env, output_tail, run_command
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.spec import ChangelogCheck, CheckBase


def has_version_section(text: str, version: str) -> bool:
    """True when a markdown heading names ``version`` ("## [1.4.0] - 2024-05-01", "# v1.4.0")."""
    pattern = re.compile(
        rf"^#{{1,6}}\s*\[?v?{re.escape(version.removeprefix('v'))}\]?(?=$|[\s\]\)])",
        re.MULTILINE,
    )
    return bool(pattern.search(text))


def check_changelog(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    """Pass when the changelog names ``ctx.version`` or changed since the deployed ref."""
    assert isinstance(section, ChangelogCheck)
    path = checkout / section.path
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        return error_result(
            "changelog", f"cannot read {section.path}: {exc.strerror}", figure="unreadable"
        )
    section_found = text is not None and has_version_section(text, ctx.version)
    details: dict[str, Any] = {"version": ctx.version, "section_found": section_found}
    changed: bool | None = None
    if ctx.previous_ref is not None:
        for ref in (ctx.previous_ref, ctx.new_ref):
            if not SAFE_REF.match(ref):
                return error_result(
                    "changelog", f"ref {ref!r} is not a valid git ref", figure="bad ref"
                )
        outcome = run_command(
            ["git", "diff", "--name-only", ctx.previous_ref, ctx.new_ref, "--", str(section.path)],
            cwd=checkout,
            timeout=section.timeout,
            env=controlled_env({}, ctx.environ),
        )
        if not outcome.succeeded:
            return error_result(
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
