"""The review check over real HTTP against the fake GitHub server: Enterprise prefix, Link
pagination, errors, and a GitHub that cannot be reached."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from deployflow.checks import CheckContext, CheckStatus, PreChecksSpec, run_check
from deployflow.fakes.github_api import FakeAnswer, FakeGitHub
from deployflow.processes import free_port

pytestmark = pytest.mark.integration

SHA = "b" * 40
TOKEN = SecretStr("ghs_enterprise_token")


def run(base_url, **review):
    spec = PreChecksSpec.model_validate(
        {
            "checkout": ".",
            "review": {"repo": "corp/api", "base_url": base_url, "timeout": "10s", **review},
        }
    )
    return run_check("review", spec, CheckContext(version="2.0.0", new_ref=SHA, github_token=TOKEN))


def test_enterprise_server_paginated_approval_and_errors():
    with FakeGitHub(
        token=TOKEN.get_secret_value(), path_prefix="/api/v3", per_page_max=1
    ) as github:
        for number in (3, 4):
            github.add_pull("corp/api", number=number, author="ann", commits=[SHA])
            github.add_review("corp/api", number, reviewer="ben", state="COMMENTED")
            github.add_review("corp/api", number, reviewer="cat", state="APPROVED")

        result = run(github.base_url)
        assert result.status is CheckStatus.PASSED, result.reason
        assert result.figure == "1/1 approvals (#3, #4)"
        assert github.requests[0] == f"/api/v3/repos/corp/api/commits/{SHA}/pulls?per_page=100"
        assert "/api/v3/repos/corp/api/pulls/4/reviews?per_page=1&page=2" in github.requests

        github.fail_next(FakeAnswer(503, {"message": "unavailable"}))
        result = run(github.base_url)
        assert result.status is CheckStatus.ERROR
        assert "GitHub is failing (503)" in result.reason


def test_unreachable_github_is_an_error():
    result = run(f"http://127.0.0.1:{free_port()}")
    assert result.status is CheckStatus.ERROR
    assert "could not reach GitHub at http://127.0.0.1:" in result.reason
