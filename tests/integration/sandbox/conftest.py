"""Helpers for the sandbox integration tests: real processes on free loopback ports."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest


def _request_versions(url: str, count: int, *, path: str = "/healthz") -> Counter[str]:
    """Send ``count`` GETs to ``url + path`` (8 at a time); count answers by serving version.

    Any status other than 200 fails the calling test: a split test must not hide errors.
    """

    def one(client: httpx.Client) -> str:
        response = client.get(path)
        assert response.status_code == 200, response.text
        return str(response.json()["version"])

    with httpx.Client(base_url=url, timeout=5.0) as client, ThreadPoolExecutor(8) as pool:
        return Counter(pool.map(lambda _: one(client), range(count)))


def _process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (exited, reaped or a zombie awaiting its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    state = stat[stat.rindex(")") + 2 :].split()[0]
    if state in ("Z", "X"):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def request_versions():
    """``request_versions(url, count, path="/healthz") -> Counter`` of serving versions."""
    return _request_versions


@pytest.fixture
def process_gone():
    """``process_gone(pid) -> bool``: the process no longer runs."""
    return _process_gone
