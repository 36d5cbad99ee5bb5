"""The review check: every pull request that contains the deployed commit is approved on GitHub.

Approval means enough approvals from reviewers other than the author and no changes requested.
The GitHub API calls themselves live in ``deployflow.checks.review``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from deployflow.checks.context import CheckContext
from deployflow.checks.kinds.common import error_result, resolve_sha
from deployflow.checks.result import CheckResult, CheckStatus
from deployflow.checks.review import GitHubError, GitHubReviews
from deployflow.checks.spec import CheckBase, ReviewCheck


def check_review(section: CheckBase, checkout: Path, ctx: CheckContext) -> CheckResult:
    """Find the pull requests containing ``ctx.new_ref`` and require each to be approved."""
    assert isinstance(section, ReviewCheck)
    deadline = time.monotonic() + section.timeout
    if section.credentials_block and ctx.github_token is None:
        return error_result(
            "review",
            f"the credentials block {section.credentials_block!r} is configured but no token "
            "was given",
            figure="no token",
        )
    try:
        sha = resolve_sha(ctx.new_ref, checkout, ctx, section.timeout)
    except ValueError as exc:
        return error_result("review", str(exc), figure="no commit")
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
        return error_result("review", str(exc), figure="unknown", details={"commit": sha})
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
