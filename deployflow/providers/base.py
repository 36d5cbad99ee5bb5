"""The contracts every backend meets. The flow only ever talks to these.

A backend failure that is part of normal operation (a metric query that fails, a health check that
does not answer) is returned as data; exceptions are for misconfiguration and broken invariants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Instance:
    """One running version of the service."""

    version: str
    host: str
    port: int
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@runtime_checkable
class Target(Protocol):
    """How a version of the service runs (local processes today; Kubernetes later)."""

    def start(self, version: str) -> Instance:
        """Start ``version`` and return once its health endpoint answers 2xx."""
        ...

    def stop(self, version: str) -> None:
        """Stop ``version``; stopping a version that does not run is not an error."""
        ...

    def instances(self) -> list[Instance]:
        """The versions running now."""
        ...


@dataclass(frozen=True)
class RouterState:
    """Where traffic goes now. ``canary_weight`` is a percentage 0..100."""

    stable: str | None  # "host:port" of the stable server, None when disabled
    canary: str | None
    canary_weight: int


@runtime_checkable
class Router(Protocol):
    """Splits traffic between a stable and a canary endpoint (HAProxy today)."""

    def state(self) -> RouterState: ...

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        """Point the stable slot at ``stable`` and the canary slot at ``canary`` with
        ``canary_weight`` percent of the traffic (0 disables the canary slot)."""
        ...

    def promote(self, instance: Instance) -> None:
        """Make ``instance`` the stable server with 100% of the traffic; canary slot disabled."""
        ...
