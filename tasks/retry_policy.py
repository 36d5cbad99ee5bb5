"""How the tasks that talk to the network are retried and bounded in time.

A task that reads or writes a remote system (the router, the metrics store, the target's API, a
chat, PagerDuty, GitHub, the tracking database) is retried a couple of times after a short,
jittered delay -- so the runs of several deploys that fail at once do not retry in lockstep against
a recovering server -- and is stopped when it takes far longer than such a call ever should.

Tasks that must not run twice get ``no_retries``: starting a version (the github-actions target
would dispatch a second workflow run) and the blue-green traffic switch. Their own backends bound
their time; a repeat would be a second release action, not a second look.

A Prefect task timeout interrupts a blocking call only in the flow's main thread (an alarm
signal); in a worker thread (a task submitted to run concurrently) it cannot, and Prefect warns
so at every run. Tasks the flow calls directly keep Prefect's timeout; submitted tasks
(``retried_in_worker_thread``) bound their call with ``within_deadline`` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import State

RETRIES = 2
# Seconds before the first and the second retry; Prefect varies each by the jitter factor.
RETRY_DELAYS: list[float] = [1.0, 3.0]
RETRY_JITTER_FACTOR = 0.5

# Timeouts, seconds. Each is far above what a healthy call takes, so it only ends a hung call.
QUICK_CALL = 60.0  # a few HTTP requests: router state, one metric query, one flag change
NOTIFY = 120.0  # every notifier once, each with its own HTTP timeout
VERIFY = 600.0  # health, smoke requests with their attempts, metrics
CHECK = 3600.0  # one pre-deployment gate: a test suite or a build runs here
DATABASE = 60.0  # one tracking-database transaction


def retried(
    timeout_seconds: float, retries: int = RETRIES, *, final: tuple[type[Exception], ...] = ()
) -> dict[str, Any]:
    """Task options for a call that may safely be repeated: retries, jittered delays, timeout.
    An exception of a ``final`` type is an answer, not a glitch: it is never retried."""
    return {**retried_in_worker_thread(retries, final=final), "timeout_seconds": timeout_seconds}


def retried_in_worker_thread(
    retries: int = RETRIES, *, final: tuple[type[Exception], ...] = ()
) -> dict[str, Any]:
    """``retried`` for a task submitted to run concurrently, without Prefect's timeout (which
    cannot interrupt it there): the task bounds its call with ``deployflow.polling.within_deadline``
    and one of the limits above."""
    options: dict[str, Any] = {
        "retries": retries,
        "retry_delay_seconds": RETRY_DELAYS[: max(retries, 1)],
        "retry_jitter_factor": RETRY_JITTER_FACTOR,
    }
    if final:
        options["retry_condition_fn"] = _retry_unless(final)
    return options


def _retry_unless(final: tuple[type[Exception], ...]) -> Callable[[Any, Any, State[Any]], bool]:
    def retry(task: Any, task_run: Any, state: State[Any]) -> bool:
        try:
            state.result()
        except final:
            return False
        except Exception:
            return True
        return True

    return retry


def no_retries(timeout_seconds: float | None = None) -> dict[str, Any]:
    """Task options for a step that must not run twice (a start, a traffic switch)."""
    return {"retries": 0, "timeout_seconds": timeout_seconds}


def observation_timeout(max_seconds: float, interval_seconds: float) -> float:
    """Timeout of a task that observes for at most ``max_seconds`` (a stage's maximum
    duration), with room for slow queries; only a hung observation hits it."""
    return max_seconds + 2 * interval_seconds + 300.0
