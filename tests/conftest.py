"""Shared fixtures: real servers on free loopback ports, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deployflow.sandbox.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server (Debian package) for the whole session; tests create databases."""
    with LocalPostgres() as pg:
        yield pg
