"""Code review gate: the pull request(s) containing the commit are approved on GitHub.

Uses two REST endpoints: ``GET /repos/{repo}/commits/{sha}/pulls`` and
``GET /repos/{repo}/pulls/{number}/reviews``, both paginated through ``Link`` headers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

MAX_PAGES = 20
PER_PAGE = 100


class GitHubError(Exception):
    """GitHub could not answer the question; the message is safe to show (no token)."""


@dataclass(frozen=True)
class PullRequestReview:
    """Review verdict of one pull request."""

    number: int
    author: str
    url: str
    approvers: tuple[str, ...]
    changes_requested_by: tuple[str, ...]

    def approved(self, required: int) -> bool:
        """Enough approvals from people other than the author, and no changes still requested."""
        return len(self.approvers) >= required and not self.changes_requested_by

    def describe(self, required: int) -> str:
        """One line: '#12 by alice: 1/2 approvals (bob); changes requested by carol'."""
        text = f"#{self.number} by {self.author}: {len(self.approvers)}/{required} approvals"
        if self.approvers:
            text += f" ({', '.join(self.approvers)})"
        if self.changes_requested_by:
            text += f"; changes requested by {', '.join(self.changes_requested_by)}"
        return text


def latest_verdicts(reviews: list[dict[str, Any]], author: str) -> tuple[list[str], list[str]]:
    """Approvers and change requesters from a PR's reviews, as GitHub counts them.

    A reviewer's latest APPROVED / CHANGES_REQUESTED / DISMISSED review is their verdict; COMMENTED
    and PENDING reviews do not change it. The author's own reviews never count.
    """
    verdict: dict[str, str] = {}
    for review in sorted(reviews, key=lambda item: str(item.get("submitted_at") or "")):
        login = str((review.get("user") or {}).get("login") or "")
        state = str(review.get("state") or "")
        if not login or login == author:
            continue
        if state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            verdict[login] = state
    approvers = sorted(login for login, state in verdict.items() if state == "APPROVED")
    requesters = sorted(login for login, state in verdict.items() if state == "CHANGES_REQUESTED")
    return approvers, requesters


class GitHubReviews:
    """Reads pull requests and reviews for one repository.

    Args:
        client: HTTP client; requests use absolute URLs built from ``base_url``.
        base_url: API root, ``https://api.github.com`` or ``https://HOST/api/v3``.
        repo: ``owner/name``.
        token: Sent as a Bearer token when given; never logged or put in messages.
        deadline: ``time.monotonic()`` value after which no further request is made.
    """

    def __init__(
        self,
        client: httpx.Client,
        *,
        base_url: str,
        repo: str,
        token: SecretStr | None,
        deadline: float,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._repo = repo
        self._deadline = deadline
        self._headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token.get_secret_value()}"

    def pull_requests_for(self, sha: str) -> list[dict[str, Any]]:
        """Pull requests that contain commit ``sha``."""
        return self._paginate(f"{self._base}/repos/{self._repo}/commits/{sha}/pulls")

    def review_of(self, pull: dict[str, Any]) -> PullRequestReview:
        """The review verdict of one pull request."""
        number = int(pull["number"])
        author = str((pull.get("user") or {}).get("login") or "")
        reviews = self._paginate(f"{self._base}/repos/{self._repo}/pulls/{number}/reviews")
        approvers, requesters = latest_verdicts(reviews, author)
        return PullRequestReview(
            number=number,
            author=author,
            url=str(pull.get("html_url") or ""),
            approvers=tuple(approvers),
            changes_requested_by=tuple(requesters),
        )

    def _paginate(self, url: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        next_url: str | None = url
        params: dict[str, int] | None = {"per_page": PER_PAGE}
        for _ in range(MAX_PAGES):
            if next_url is None:
                return items
            response = self._get(next_url, params)
            params = None  # the next link already carries the query
            page = response.json()
            if not isinstance(page, list):
                raise GitHubError(f"GitHub answered {_path(next_url)} with a non-list body")
            items.extend(page)
            link = response.links.get("next")
            next_url = link.get("url") if link else None
        if next_url is not None:
            raise GitHubError(f"more than {MAX_PAGES} pages at {_path(url)}; refusing to go on")
        return items

    def _get(self, url: str, params: dict[str, int] | None) -> httpx.Response:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise GitHubError("the review check ran out of time talking to GitHub")
        try:
            response = self._client.get(
                url, params=params, headers=self._headers, timeout=remaining
            )
        except httpx.TimeoutException as exc:
            raise GitHubError(f"GitHub did not answer {_path(url)} in time") from exc
        except httpx.TransportError as exc:
            raise GitHubError(
                f"could not reach GitHub at {_origin(url)}: {type(exc).__name__}"
            ) from exc
        if response.status_code == 200:
            return response
        raise GitHubError(_explain(response, url))


def _path(url: str) -> str:
    return httpx.URL(url).path


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"


def _explain(response: httpx.Response, url: str) -> str:
    status = response.status_code
    try:
        message = str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    where = _path(url)
    if status == 401:
        return "GitHub rejected the token (401 Bad credentials): check the configured token"
    if status in (403, 429) and (
        response.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in response.headers
    ):
        return f"GitHub rate limit reached ({status}); {_retry_hint(response)}"
    if status == 403:
        return f"GitHub refused {where} (403 {message or 'Forbidden'}): the token lacks access"
    if status == 404:
        return (
            f"GitHub answered 404 for {where}: the repository or commit does not exist, or the "
            "token cannot see it"
        )
    if status >= 500:
        return f"GitHub is failing ({status}) on {where}; try again later"
    return f"GitHub answered {status} for {where}: {message or response.reason_phrase}"


def _retry_hint(response: httpx.Response) -> str:
    if "retry-after" in response.headers:
        return f"retry after {response.headers['retry-after']}s"
    reset = response.headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        when = datetime.fromtimestamp(int(reset), tz=UTC).strftime("%H:%M:%S UTC")
        return f"the limit resets at {when}"
    return "try again later"
