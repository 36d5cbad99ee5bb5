"""Shared fixtures: real servers on free loopback ports, started once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from deployflow.sandbox.postgres import LocalPostgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A real PostgreSQL server (Debian package) for the whole session; tests create databases."""
    with LocalPostgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real Prefect server (SQLite, temporary) for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # No telemetry from test servers: this machine, and many CI runners, cannot reach it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # It starts in seconds on an idle machine; a loaded 2-core runner has taken over 90 s.
    with prefect_test_harness(server_startup_timeout=240):
        yield str(PREFECT_API_URL.value())


_LAYER_MARKERS = {
    "unit": pytest.mark.unit,
    "integration": pytest.mark.integration,
    "e2e": pytest.mark.e2e,
    "browser": pytest.mark.browser,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test carries its layer's marker, so `-m unit` selects exactly the fast tests."""
    for item in items:
        if any(item.get_closest_marker(name) for name in _LAYER_MARKERS):
            continue
        parts = item.path.parts
        for name, marker in _LAYER_MARKERS.items():
            if name in parts:
                item.add_marker(marker)
                break
