"""Review gate logic against the fake GitHub, in-process through its MockTransport."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from deployflow.checks import CheckContext, CheckStatus, PreChecksSpec, run_check
from deployflow.checks.review import latest_verdicts
from deployflow.fakes.github_api import FakeAnswer, FakeGitHub

pytestmark = pytest.mark.unit

SHA = "a" * 40
REPO = "acme/shop"
TOKEN = "ghp_secretvalue123"


def review_spec(**review):
    return PreChecksSpec.model_validate(
        {"checkout": ".", "review": {"repo": REPO, "credentials_block": "gh", **review}}
    )


def check(github, spec=None, token=TOKEN):
    ctx = CheckContext(
        version="1.0.0",
        new_ref=SHA,
        github_token=SecretStr(token) if token else None,
        github_transport=github.transport(),
    )
    return run_check("review", spec or review_spec(base_url="http://github.test"), ctx)


@pytest.fixture
def github():
    fake = FakeGitHub(token=TOKEN)
    fake.add_pull(REPO, number=7, author="alice", commits=[SHA])
    return fake


def test_latest_verdict_per_reviewer_counts_and_author_is_ignored():
    reviews = [
        {
            "user": {"login": "bob"},
            "state": "CHANGES_REQUESTED",
            "submitted_at": "2024-01-01T00:00:01Z",
        },
        {"user": {"login": "bob"}, "state": "APPROVED", "submitted_at": "2024-01-01T00:00:02Z"},
        {"user": {"login": "bob"}, "state": "COMMENTED", "submitted_at": "2024-01-01T00:00:03Z"},
        {"user": {"login": "carol"}, "state": "APPROVED", "submitted_at": "2024-01-01T00:00:01Z"},
        {"user": {"login": "carol"}, "state": "DISMISSED", "submitted_at": "2024-01-01T00:00:02Z"},
        {"user": {"login": "alice"}, "state": "APPROVED", "submitted_at": "2024-01-01T00:00:04Z"},
    ]
    assert latest_verdicts(reviews, author="alice") == (["bob"], [])


def test_approved_pull_request_passes(github):
    github.add_review(REPO, 7, reviewer="bob", state="APPROVED")
    result = check(github)
    assert result.status is CheckStatus.PASSED, result.reason
    assert result.figure == "1/1 approvals (#7)"
    assert result.details["pull_requests"][0]["approvers"] == ["bob"]


def test_self_approval_does_not_count(github):
    github.add_review(REPO, 7, reviewer="alice", state="APPROVED")
    result = check(github)
    assert result.status is CheckStatus.FAILED
    assert "#7 by alice: 0/1 approvals" in result.reason


def test_outstanding_changes_requested_blocks_even_with_approvals(github):
    github.add_review(REPO, 7, reviewer="bob", state="APPROVED")
    github.add_review(REPO, 7, reviewer="carol", state="CHANGES_REQUESTED")
    result = check(github)
    assert result.status is CheckStatus.FAILED
    assert "changes requested by carol" in result.reason


def test_required_approvals_are_counted_across_pages(github):
    github.per_page_max = 2
    for index in range(5):
        github.add_review(REPO, 7, reviewer=f"reviewer{index}", state="COMMENTED")
    github.add_review(REPO, 7, reviewer="bob", state="APPROVED")
    github.add_review(REPO, 7, reviewer="dave", state="APPROVED")
    spec = review_spec(base_url="http://github.test", required_approvals=2)
    result = check(github, spec)
    assert result.status is CheckStatus.PASSED, result.reason
    review_pages = [path for path in github.requests if "/reviews" in path]
    assert len(review_pages) == 4  # 7 reviews, 2 per page, followed through Link rel="next"


def test_commit_in_no_pull_request_fails(github):
    github.add_repo("acme/other")
    result = check(github, review_spec(repo="acme/other", base_url="http://github.test"))
    assert result.status is CheckStatus.FAILED
    assert "no pull request in acme/other contains commit aaaaaaaaaaaa" in result.reason


def test_every_pull_request_containing_the_commit_must_be_approved(github):
    github.add_pull(REPO, number=9, author="erin", commits=[SHA])
    github.add_review(REPO, 7, reviewer="bob", state="APPROVED")
    result = check(github)
    assert result.status is CheckStatus.FAILED
    assert result.figure == "1/2 PRs not approved"
    assert "#9 by erin" in result.reason


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (FakeAnswer(500, {"message": "boom"}), "GitHub is failing (500)"),
        (FakeAnswer(502, {}), "GitHub is failing (502)"),
        (
            FakeGitHub.rate_limited(1_700_000_000),
            "rate limit reached (403); the limit resets at 22:13:20 UTC",
        ),
        (FakeAnswer(429, {"message": "slow down"}, {"Retry-After": "30"}), "retry after 30s"),
        (FakeAnswer(403, {"message": "Resource not accessible"}), "the token lacks access"),
    ],
)
def test_error_answers_become_errors_with_clear_messages(github, answer, message):
    github.fail_always(answer)
    result = check(github)
    assert result.status is CheckStatus.ERROR
    assert message in result.reason


def test_bad_token_and_unknown_repository(github):
    result = check(github, token="ghp_wrong")
    assert result.status is CheckStatus.ERROR
    assert "rejected the token (401" in result.reason
    result = check(github, review_spec(repo="acme/nope", base_url="http://github.test"))
    assert result.status is CheckStatus.ERROR
    assert "404" in result.reason
    assert "/repos/acme/nope/commits" in result.reason


def test_configured_secret_block_without_token_is_an_error(github):
    result = check(github, token=None)
    assert result.status is CheckStatus.ERROR
    assert "'gh' is configured but no token was given" in result.reason


def test_token_never_appears_in_the_result(github):
    github.add_review(REPO, 7, reviewer="bob", state="APPROVED")
    for answer in (None, FakeAnswer(500, {}), FakeGitHub.rate_limited()):
        github.fail_always(answer)
        result = check(github)
        assert TOKEN not in json.dumps(result.model_dump(mode="json"))
        assert TOKEN not in repr(result)
