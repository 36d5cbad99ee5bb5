"""One deploy per service and environment at a time, on the Prefect server as well as in the
tracking database: the name of the Prefect global concurrency limit a deploy holds, and what a
second deploy is told. The Prefect calls live in ``tasks/concurrency.py``.

The limit stops a second run before it reads any backend; the tracking database's guard (the
partial unique index and the lease, ``deployflow.tracking``) still decides for runs that reach it
through another Prefect server or none.
"""

from __future__ import annotations

from typing import Literal

ConcurrencyMode = Literal["wait", "refuse"]
CONCURRENCY_MODES: tuple[ConcurrencyMode, ...] = ("wait", "refuse")

LIMIT_PREFIX = "deployflow:deploy"


class DeployRefused(RuntimeError):
    """Another deploy of this service and environment holds its concurrency limit, and the spec
    says ``concurrency: refuse``."""


def limit_name(service: str, environment: str) -> str:
    """The global concurrency limit of one service in one environment.

    ':' appears in neither a service name nor an environment name, so no two pairs share a limit
    ("a-b" in "c" and "a" in "b-c" stay apart).
    """
    return f"{LIMIT_PREFIX}:{service}:{environment}"


def refusal_message(service: str, environment: str) -> str:
    name = limit_name(service, environment)
    return (
        f"refused: another deploy of {service} to {environment} is running (it holds the Prefect "
        f"concurrency limit {name!r}); nothing was started. Start this one when it has ended, or "
        "set 'concurrency: wait' in the spec to queue behind it"
    )


def waiting_message(service: str, environment: str) -> str:
    name = limit_name(service, environment)
    return (
        f"another deploy of {service} to {environment} is running (it holds the Prefect "
        f"concurrency limit {name!r}); waiting for it to end (the spec's 'concurrency: wait')"
    )
