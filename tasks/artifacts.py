"""Names of the artifacts a deploy publishes."""

from __future__ import annotations


def artifact_key(prefix: str, service: str) -> str:
    """``prefix-service``; artifact keys allow lowercase letters, digits and dashes only."""
    safe = "".join(ch if ch.isalnum() else "-" for ch in service.lower())
    return f"{prefix}-{safe}"
