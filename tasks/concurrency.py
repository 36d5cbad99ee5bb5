"""The Prefect global concurrency limit a deploy holds from its first backend call to its end.

Not a task: a slot is held around the whole deploy (``flows/deploy.py``), not around one step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from functools import partial
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
from tasks.prefect_api import api_unreachable, mark_api_lost

# How long the server keeps a slot whose holder stopped renewing it (a worker that died): the next
# deploy waits at most this long for it. Renewed in the background while the deploy runs.
SLOT_LEASE_SECONDS = 60.0
# How often a deploy that finds the slot taken asks again.
SLOT_POLL_SECONDS = 1.0

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

    The slot's lease lives in the Prefect server's memory: a server restarted while a deploy
    held it keeps the slot taken with nobody to give it back, and a worker that died keeps it
    until its lease lapses. So the holder is checked against the tracking database, whose lease
    outlives any Prefect server: a slot held while ``holder_alive`` (is a deploy of this service
    and environment running there with a live lease?) has said no for a whole tracking lease
    period (``DEPLOYFLOW_LEASE_SECONDS``, which also covers a deploy that took the slot a moment
    ago and has not written its row yet) is released, with a log line, and taken. In 'refuse'
    mode a live holder refuses at once; in 'wait' mode the deploy waits for it.

    Raises:
        DeployRefused: ``mode`` is 'refuse' and another live deploy holds the slot.
    """
    name = limit_name(service, environment)
    ensure_limit(name)
    holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(flow_run_id)) if flow_run_id else None

    def take(stack: ExitStack) -> bool:
        slot = concurrency(
            name,
            occupy=1,
            max_retries=0,
            lease_duration=SLOT_LEASE_SECONDS,
            strict=True,
            holder=holder,
            raise_on_lease_renewal_failure=False,
        )
        try:
            slot.__enter__()
        except Exception as exc:
            if not _slot_taken(exc):
                raise
            return False
        stack.push(partial(give_back, slot, name, service, environment, logger))
        return True

    with ExitStack() as stack:
        told = False
        nobody_since: float | None = None
        while not take(stack):
            alive = holder_alive is None or holder_alive()
            if alive and mode == "refuse":
                raise DeployRefused(refusal_message(service, environment)) from None
            if alive:
                nobody_since = None
            elif nobody_since is None:
                nobody_since = time.monotonic()
            elif time.monotonic() - nobody_since >= lease_seconds():
                release_orphaned_slot(name, service, environment, logger)
                nobody_since = None
                continue
            if not told:
                logger.warning(
                    waiting_message(service, environment)
                    if alive
                    else orphan_message(name, service, environment, lease_seconds())
                )
                told = True
            time.sleep(SLOT_POLL_SECONDS)  # pacing between attempts, not synchronisation
        logger.info("holding the Prefect concurrency limit %r", name)
        yield name


def give_back(
    slot: AbstractContextManager[Any],
    name: str,
    service: str,
    environment: str,
    logger: Logger,
    *exc_info: Any,
) -> bool:
    """Leave ``slot`` (``exc_info`` as ``__exit__`` has it). With the Prefect API gone, or a
    server that restarted meanwhile and no longer knows the slot's lease (it kept it in memory),
    the slot cannot be given back: said, never raised (the deploy's outcome is reached and
    recorded by now); the next deploy releases it once no deploy holds a live tracking lease."""
    try:
        return bool(slot.__exit__(*exc_info))
    except Exception as exc:
        if exc is exc_info[1]:
            raise
        if api_unreachable(exc):
            mark_api_lost(f"giving back the concurrency limit {name!r}", exc)
        elif not _lease_unknown(exc):
            raise
        logger.warning(
            "the Prefect concurrency limit %r could not be given back (%s): the next deploy of "
            "%s to %s releases it once it finds no deploy holding a live lease in the tracking "
            "database",
            name,
            type(exc).__name__,
            service,
            environment,
        )
        return False


def _lease_unknown(exc: BaseException) -> bool:
    """Whether releasing a slot failed because the server does not know its lease (HTTP 404: a
    server restarted since it was taken keeps no lease)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.HTTPStatusError):
            return seen.response.status_code == 404
        seen = seen.__cause__
    return False


def orphan_message(name: str, service: str, environment: str, seconds: float) -> str:
    return (
        f"the Prefect concurrency limit {name!r} is held, but no deploy of {service} to "
        f"{environment} is running in the tracking database: it is released if that is still so "
        f"{seconds:g} s from now (a deploy that died, or a Prefect server restarted while a "
        "deploy held it, leaves the slot taken)"
    )


def release_orphaned_slot(name: str, service: str, environment: str, logger: Logger) -> None:
    """Give back one slot of ``name`` that nobody alive holds (see ``deploy_slot``)."""
    with get_client(sync_client=True) as client:
        # The server wants how long the slot was occupied (above 0); it is not known, only that it
        # was unheld for at least a lease period.
        client.release_concurrency_slots(names=[name], slots=1, occupancy_seconds=lease_seconds())
    logger.warning(
        "released the Prefect concurrency limit %r: no deploy of %s to %s has held a live lease "
        "in the tracking database for %g s, so the slot's holder is gone",
        name,
        service,
        environment,
        lease_seconds(),
    )


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
