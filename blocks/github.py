"""GitHub credentials as a Prefect block, for the review check and release links."""

from __future__ import annotations

import httpx
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

GITHUB_API_URL = "https://api.github.com"


class GitHubCredentialsBlock(Block):
    """A GitHub token and the REST API it is valid for.

    Attributes:
        token: Personal access token or GitHub App installation token.
        base_url: REST API root: ``https://api.github.com``, or
            ``https://<host>/api/v3`` for GitHub Enterprise Server.

    Example:
        ```python
        from blocks import GitHubCredentialsBlock

        with GitHubCredentialsBlock.load("ci").get_client() as github:
            github.get("/repos/acme/payments/pulls")
        ```
    """

    _description = "GitHub token and API URL used by deployflow's review check."

    token: SecretStr = Field(
        description="GitHub token allowed to read pull requests and reviews of the repository.",
    )
    base_url: str = Field(
        default=GITHUB_API_URL,
        description="GitHub REST API root; https://<host>/api/v3 for GitHub Enterprise Server.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url: must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def get_client(
        self, *, timeout: float = 10.0, transport: httpx.BaseTransport | None = None
    ) -> httpx.Client:
        """Build an HTTP client that sends the token to the configured API.

        Args:
            timeout: Seconds per request.
            transport: An ``httpx`` transport to use instead of the network (for example
                ``FakeGitHub().transport()`` in tests).

        Returns:
            An ``httpx.Client`` with ``base_url`` set and the ``Authorization`` header; the caller
            closes it. httpx masks the header in ``repr``, so logging the client is safe.
        """
        return httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {self.token.get_secret_value()}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            timeout=timeout,
            transport=transport,
        )
