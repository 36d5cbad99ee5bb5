"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables examples/sandbox.yaml reads, pointing at nothing that answers: the spec loads
    and validates, and anything that would reach a server fails at once."""
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_STATE_DIR", "/nonexistent/state")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_HAPROXY_SOCKET", "/nonexistent/haproxy.sock")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_FRONTEND_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DEPLOYFLOW_SANDBOX_PROMETHEUS_URL", "http://127.0.0.1:9")
