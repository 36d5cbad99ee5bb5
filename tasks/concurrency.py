"""The Prefect global concurrency limit a deploy holds from its first backend call to its end.

Not a task: a slot is held around the whole deploy (``flows/deploy.py``), not around one step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from deployflow.concurrency import (
    ConcurrencyMode,
    DeployRefused,
    limit_name,
    refusal_message,
    waiting_message,
)

# How long the server keeps a slot whose holder stopped renewing it (a worker that died): the next
# deploy waits at most this long for it. Renewed in the background while the deploy runs.
SLOT_LEASE_SECONDS = 60.0

Logger = logging.Logger | logging.LoggerAdapter[Any]


def ensure_limit(name: str) -> None:
    """Create the limit (one slot, active) unless it exists; an existing one is left as its
    owner set it (an operator may deactivate it or give it more slots on purpose)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        # Another deploy may have created it a moment ago.
        with suppress(ObjectAlreadyExists):
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _slot_taken(exc: BaseException) -> bool:
    """Whether an acquisition failed because every slot is held (HTTP 423 from the server)."""
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


@contextmanager
def deploy_slot(
    service: str,
    environment: str,
    mode: ConcurrencyMode,
    logger: Logger,
    flow_run_id: str | None = None,
) -> Iterator[str]:
    """Hold the service's and environment's slot while the block runs; yields the limit's name.

    Strict: a limit that cannot be found or read fails the deploy rather than letting it run
    unguarded. A lease renewal that fails later is logged, not raised: by then traffic may be
    moving, and stopping the run halfway would be worse than a second deploy being let in (the
    tracking database's guard still refuses that one).

    Raises:
        DeployRefused: ``mode`` is 'refuse' and another deploy holds the slot.
    """
    name = limit_name(service, environment)
    ensure_limit(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None

    def take(stack: ExitStack, max_retries: int | None) -> None:
        stack.enter_context(
            concurrency(
                name,
                occupy=1,
                max_retries=max_retries,
                lease_duration=SLOT_LEASE_SECONDS,
                strict=True,
                holder=holder,
                raise_on_lease_renewal_failure=False,
            )
        )

    with ExitStack() as stack:
        try:
            take(stack, max_retries=0)
        except Exception as exc:
            if not _slot_taken(exc):
                raise
            if mode == "refuse":
                raise DeployRefused(refusal_message(service, environment)) from None
            logger.warning(waiting_message(service, environment))
            take(stack, max_retries=None)
        logger.info("holding the Prefect concurrency limit %r", name)
        yield name
