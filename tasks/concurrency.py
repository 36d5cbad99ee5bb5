"""The Prefect global concurrency limit a deploy holds from its first backend call to its end.

Not a task: a slot is held around the whole deploy (``flows/deploy.py``), not around one step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
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
from deployflow.tracking.lease import lease_alive, lease_seconds
from deployflow.tracking.ledger import Ledger

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
    holder_alive: Callable[[], bool] | None = None,
) -> Iterator[str]:
    """Hold the service's and environment's slot while the block runs; yields the limit's name.

    Strict: a limit that cannot be found or read fails the deploy rather than letting it run
    unguarded. A lease renewal that fails later is logged, not raised: by then traffic may be
    moving, and stopping the run halfway would be worse than a second deploy being let in (the
    tracking database's guard still refuses that one).

    A slot is also held for up to ``SLOT_LEASE_SECONDS`` by a deploy whose process died. In
    'refuse' mode, ``holder_alive`` (the tracking database's view: is a deploy of this service
    and environment running with a live lease?) tells the two apart: a dead holder is waited out
    instead of refusing, so a deploy after a crash is not turned away by a slot nobody uses.

    Raises:
        DeployRefused: ``mode`` is 'refuse' and another live deploy holds the slot.
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
            if mode == "refuse" and (holder_alive is None or holder_alive()):
                raise DeployRefused(refusal_message(service, environment)) from None
            if mode == "refuse":
                logger.warning(
                    "the Prefect concurrency limit %r is held, but no deploy of %s to %s is "
                    "running in the tracking database (a run that died keeps its slot until the "
                    "slot's %g s lease lapses): waiting for it",
                    name,
                    service,
                    environment,
                    SLOT_LEASE_SECONDS,
                )
            else:
                logger.warning(waiting_message(service, environment))
            take(stack, max_retries=None)
        logger.info("holding the Prefect concurrency limit %r", name)
        yield name


def live_deploy_in(ledger: Ledger | None, service: str, environment: str, own: str | None) -> bool:
    """Whether the tracking database shows another deploy of this service and environment
    running with a live lease. Cannot tell (no database, or it cannot be read): True, the side
    that refuses."""
    if ledger is None:
        return True
    try:
        rows = ledger.unfinished(service, environment, except_flow_run=own)
    except Exception:
        return True
    now = datetime.now(UTC)
    return any(not r.ended and lease_alive(r.heartbeat_at, now, lease_seconds()) for r in rows)
