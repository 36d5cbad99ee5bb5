"""Fencing: every traffic move and every start or stop a deploy makes carries its lease.

A deploy's process can stop for longer than its lease (Ctrl-Z, a frozen VM, a long GC pause) and
wake up after the next deploy has taken over. What it was about to do (set a canary weight, roll
back) would then act on the other deploy's traffic. So the router and the target a deploy holds
are wrapped: before each action the lease is checked (``check`` raises ``LeaseLost``), first on
the local clock (no renewal for a whole lease period: a process that just woke up knows it at
once, before any query), then against the tracking database (the row still running, its
heartbeat within the lease). The tracking database's lease is the fencing token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deployflow.providers.base import (
    BackendError,
    Instance,
    RouterState,
    close_backend,
    preflight_backend,
)
from deployflow.providers.base import Router as RouterContract
from deployflow.providers.base import Target as TargetContract

Check = Callable[[], None]


class LeaseLost(BackendError):
    """This deploy no longer holds its lease in the tracking database: another deploy may own
    the service's traffic now, so this one must not act on it."""


class FencedRouter:
    """``router`` whose traffic moves are refused (``LeaseLost``) once the deploy's lease is
    lost; reading where traffic goes is always allowed."""

    def __init__(self, router: RouterContract, check: Check) -> None:
        self.inner = router
        self.check = check

    @property
    def frontend_url(self) -> str:
        return self.inner.frontend_url

    def state(self) -> RouterState:
        return self.inner.state()

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        self.check()
        self.inner.set_split(stable, canary, canary_weight)

    def promote(self, instance: Instance) -> None:
        self.check()
        self.inner.promote(instance)

    def preflight(self) -> None:
        preflight_backend(self.inner)

    def close(self) -> None:
        close_backend(self.inner)

    def describe(self) -> str:
        return self.inner.describe()

    def __getattr__(self, name: str) -> Any:  # a backend's own extras (read-only by contract)
        return getattr(self.inner, name)


class FencedTarget:
    """``target`` whose starts and stops are refused (``LeaseLost``) once the deploy's lease is
    lost; reading what runs, its logs and its health URL is always allowed."""

    def __init__(self, target: TargetContract, check: Check) -> None:
        self.inner = target
        self.check = check

    def start(self, version: str) -> Instance:
        self.check()
        return self.inner.start(version)

    def stop(self, version: str) -> None:
        self.check()
        self.inner.stop(version)

    def instances(self) -> list[Instance]:
        return self.inner.instances()

    def logs(self, version: str, lines: int = 40) -> str:
        return self.inner.logs(version, lines)

    def health_url(self, instance: Instance) -> str:
        return self.inner.health_url(instance)

    def preflight(self) -> None:
        preflight_backend(self.inner)

    def close(self) -> None:
        close_backend(self.inner)

    def describe(self) -> str:
        return self.inner.describe()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def lease_lost(router: object) -> bool:
    """Whether ``router`` is fenced and its deploy's lease is lost (checked now)."""
    if not isinstance(router, FencedRouter):
        return False
    try:
        router.check()
    except LeaseLost:
        return True
    return False
