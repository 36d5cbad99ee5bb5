"""In-memory Router and Target that keep the same contract as HAProxy and local processes.

They let the pure parts that drive routers and targets (reconciliation, rollback planning) be
tested in milliseconds, the way httpx ships ``MockTransport``. The real backends are tested
against real HAProxy and real processes in the integration suite.
"""

from __future__ import annotations

from deployflow.providers.base import Instance, Router, RouterState, Target


class InMemoryTarget:
    """Versions "run" when started; ports are handed out in order."""

    def __init__(self) -> None:
        self.running: dict[str, Instance] = {}
        self._next_port = 20000

    def start(self, version: str) -> Instance:
        if version not in self.running:
            self._next_port += 1
            self.running[version] = Instance(version, "127.0.0.1", self._next_port, pid=None)
        return self.running[version]

    def stop(self, version: str) -> None:
        self.running.pop(version, None)

    def instances(self) -> list[Instance]:
        return list(self.running.values())


class InMemoryRouter:
    """Two slots and a canary percentage, like the HAProxy backend deployflow drives."""

    def __init__(self) -> None:
        self.stable: str | None = None
        self.canary: str | None = None
        self.canary_weight = 0
        self.changes: list[RouterState] = []

    def state(self) -> RouterState:
        return RouterState(self.stable, self.canary, self.canary_weight)

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight must be 0..100, got {canary_weight}")
        self.stable = stable.address
        self.canary = canary.address if canary is not None and canary_weight > 0 else None
        self.canary_weight = canary_weight if self.canary else 0
        self.changes.append(self.state())

    def promote(self, instance: Instance) -> None:
        self.stable, self.canary, self.canary_weight = instance.address, None, 0
        self.changes.append(self.state())


def _conforms(router: InMemoryRouter, target: InMemoryTarget) -> tuple[Router, Target]:
    return router, target  # mypy checks the fakes keep the Protocols' shape
