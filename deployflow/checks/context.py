"""What a check needs to know about this deploy beyond the spec."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr


@dataclass(frozen=True)
class CheckContext:
    """The deploy being checked.

    Attributes:
        version: Version being deployed (the changelog must name it, or have changed).
        new_ref: Commit SHA (or ref, resolved in the checkout) being deployed.
        previous_ref: Ref currently deployed (from the tracking database, or given); None when
            nothing is deployed yet.
        checkout: Directory the checks run in; None means the spec's ``checkout``.
        github_token: Token for the review check, from the GitHub credentials block.
        github_client: Ready HTTP client for GitHub (tests, proxies); None builds one.
        github_transport: Transport for the client deployflow builds (e.g. ``httpx.MockTransport``).
        environ: Environment the command allowlist is taken from; None means ``os.environ``.
    """

    version: str
    new_ref: str = "HEAD"
    previous_ref: str | None = None
    checkout: Path | None = None
    github_token: SecretStr | None = field(default=None, repr=False)
    github_client: httpx.Client | None = None
    github_transport: httpx.BaseTransport | None = None
    environ: Mapping[str, str] | None = None
