"""Fencing: every traffic move and every start or stop a deploy makes carries its lease.

A deploy's process can stop for longer than its lease (Ctrl-Z, a frozen VM, a long GC pause) and
wake up after the next deploy has taken over. What it was about to do (set a canary weight, roll
back) would then act on the other deploy's traffic. So the router and the target a deploy holds
are wrapped: before each action the lease is checked (``check`` raises ``LeaseLost``), first on
the local clock (no renewal for a whole lease period: a process that just woke up knows it at
once, before any query), then against the tracking database (the row still running, its
heartbeat within the lease). The tracking database's lease is the fencing token.

A tracking database that does not answer is not a lease taken by someone else: no other deploy
can take the service over without it, and once it answers again another deploy may do so only
after this one's heartbeat is a whole lease old. So the rule, per action:

- Moving traffic *towards* the new version (a canary weight above 0, a promotion, a start) needs
  the database to confirm the lease now: unconfirmed, it is refused (``LeaseUnconfirmed``), and
  the deploy rolls back instead. Promoting on a lease nobody can check is not safe.
- Putting traffic back on the version that was stable when the deploy began, and stopping a
  version (``check_restore``), need only the local lease: no renewal missed for a whole lease
  period. That is the restore a deploy whose database stopped answering must make (see
  ``deployflow.tracking.answers``), and it is safe, because within its lease nobody else acts on
  the service. After the local lease lapses, nothing is touched: the next deploy reconciles.
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


class LeaseUnconfirmed(BackendError):
    """The tracking database did not answer the lease check: this deploy may still hold its
    lease (locally it does), but nothing may move traffic towards the new version on it."""


class FencedRouter:
    """``router`` whose traffic moves are refused once the deploy's lease is lost
    (``LeaseLost``), or, for a move towards the new version, not confirmed by the tracking
    database (``LeaseUnconfirmed``); reading where traffic goes is always allowed.

    Args:
        router: The run's router.
        check: Raises unless the tracking database confirms the lease now.
        restore_check: Raises unless the lease holds at least locally (default ``check``).
        stable: The version stable when the deploy began: all traffic back on it is a restore.
    """

    def __init__(
        self,
        router: RouterContract,
        check: Check,
        restore_check: Check | None = None,
        stable: Instance | None = None,
    ) -> None:
        self.inner = router
        self.check = check
        self.restore_check = restore_check or check
        self.stable = stable

    @property
    def frontend_url(self) -> str:
        return self.inner.frontend_url

    def state(self) -> RouterState:
        return self.inner.state()

    def _restores(self, stable: Instance, canary: Instance | None, canary_weight: int) -> bool:
        back_on_stable = canary is None or canary_weight <= 0
        return back_on_stable and (self.stable is None or stable.address == self.stable.address)

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        if self._restores(stable, canary, canary_weight):
            self.restore_check()
        else:
            self.check()
        self.inner.set_split(stable, canary, canary_weight)

    def promote(self, instance: Instance) -> None:
        if self.stable is not None and instance.address == self.stable.address:
            self.restore_check()  # a blue-green switch back
        else:
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
    lost; a start also needs the tracking database to confirm the lease (``check``), a stop
    only the local lease (``restore_check``: stopping a canary is part of every rollback);
    reading what runs, its logs and its health URL is always allowed."""

    def __init__(
        self, target: TargetContract, check: Check, restore_check: Check | None = None
    ) -> None:
        self.inner = target
        self.check = check
        self.restore_check = restore_check or check

    def start(self, version: str) -> Instance:
        self.check()
        return self.inner.start(version)

    def stop(self, version: str) -> None:
        self.restore_check()
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
    """Whether ``router`` is fenced and its deploy's lease is lost (checked now): then it may
    not even put traffic back. A database that does not answer is not a lost lease."""
    if not isinstance(router, FencedRouter):
        return False
    try:
        router.restore_check()
    except LeaseLost:
        return True
    return False
