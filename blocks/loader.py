"""Load deployflow's blocks by the short type names the core's backend builders ask for."""

from __future__ import annotations

from typing import Any, TypeVar

from prefect.blocks.core import Block

from blocks.github import GitHubCredentialsBlock
from blocks.grafana import GrafanaBlock
from blocks.pagerduty import PagerDutyCredentialsBlock
from blocks.slack import SlackNotificationBlock
from blocks.tracking import TrackingDatabaseBlock
from deployflow.providers.base import BackendConfigError

B = TypeVar("B", bound=Block)

BLOCK_TYPES: dict[str, type[Block]] = {
    "slack": SlackNotificationBlock,
    "github": GitHubCredentialsBlock,
    "pagerduty": PagerDutyCredentialsBlock,
    "grafana": GrafanaBlock,
    "tracking": TrackingDatabaseBlock,
}


class PrefectBlocks:
    """The ``BlockLoader`` of a flow run: blocks saved on the Prefect server it talks to."""

    def load(self, block_type: str, name: str) -> Any:
        """The saved block ``name`` of ``block_type``.

        Raises:
            BackendConfigError: No such block is saved (the message says how to save one).
        """
        cls = BLOCK_TYPES.get(block_type)
        if cls is None:
            known = ", ".join(sorted(BLOCK_TYPES))
            raise BackendConfigError(f"no block type {block_type!r}; known: {known}")
        return load_block(cls, name)


def load_block(cls: type[B], name: str) -> B:
    """The saved block ``name`` of class ``cls``.

    Raises:
        BackendConfigError: No such block is saved (the message says how to save one).
    """
    try:
        block = cls.load(name)
    except ValueError as exc:
        # Prefect says "Unable to find block document named ..."; the value holds no secret.
        raise BackendConfigError(
            f"no {cls.__name__} named {name!r} is saved on this Prefect server ({exc}); "
            "save one (see docs/configuration/index.md, 'Secrets and blocks') or fix the name"
        ) from None
    if not isinstance(block, cls):
        raise BackendConfigError(f"block {name!r} is not a {cls.__name__}")
    return block
