"""A deploy that loses the Prefect API goes on without it.

What a deploy decides and does (its verdicts, its traffic moves, its outcome) is kept in the
tracking database and acted on through the router; Prefect only records it (subflow runs, task-run
states, artifacts, events, tags, the run's final state, log lines shipped to the server). So the
Prefect API not answering must never block or fail a deploy: it may only lose those records.

Three pieces, all Prefect-aware (hence here, not in the core):

- ``prefect_api_watch`` asks the server's health every second while a deploy runs. Once it has
  not answered for ``LOST_AFTER_SECONDS``, the API counts as lost: one warning says what is not
  recorded, and the deploy's Prefect client stops retrying (once it has connected, Prefect retries
  a refused connection for about 62 s per call, ``PREFECT_CLIENT_MAX_RETRIES`` being 5 by
  default: a deploy making a few calls would hang for minutes) and stops queueing its log lines
  for the server (they still reach the console). When the server answers again, both come back,
  and so does every record from then on.
- ``run_subflow`` calls a subflow; with the API lost it runs the subflow's function directly, and a
  subflow whose body finished but whose end Prefect could not record gives back what its body
  returned (``keeps_its_result`` under its ``@flow`` keeps it).
- ``prefect_only`` runs a side effect only Prefect keeps (an artifact, a tag, a run state):
  skipped while the API is lost, and an unreachable API while doing it is noted, never raised.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import httpx
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

# How often the watch asks the server's health, how long one question may take, and how long the
# server may refuse (connection refused or unreachable, a server error) before the API counts as
# lost: a restart shorter than that is not noticed. A server that accepts the question but is slow
# to answer (a loaded machine) is given much longer: it is there, and Prefect's retries wait for it.
WATCH_INTERVAL_SECONDS = 1.0
HEALTH_TIMEOUT_SECONDS = 2.0
LOST_AFTER_SECONDS = 3.0
SLOW_LOST_AFTER_SECONDS = 30.0
# The HTTP statuses Prefect's client itself retries, and every server error.
_RETRIED_STATUSES = frozenset({408, 429})

logger = get_logger("deployflow.prefect_api")


def api_unreachable(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, says the Prefect API could not be
    reached or failed on its side: a connection, timeout or protocol error, a server error (5xx),
    or a status Prefect's client retries (408, 429). A refusal (4xx) is an answer, not a loss."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, httpx.TransportError | ConnectionError | TimeoutError):
            return True
        if isinstance(exc, httpx.HTTPStatusError):
            status = exc.response.status_code
            return status >= 500 or status in _RETRIED_STATUSES
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class _ApiState:
    """This process's view of the Prefect API (one deploy runs per process at a time)."""

    lost: bool = False
    watching: bool = False
    # The deploy's own copy of the settings: a loss turns its client's retries and its log
    # shipping off (Prefect reads both at each use), a return turns them back as they were.
    settings: Settings | None = None
    retries: int | None = None
    logs_to_api: bool | None = None

    def lose(self, why: str) -> None:
        with _LOCK:
            if self.lost:
                return
            # Only a watch, which ends with the deploy, makes the loss last: without one (a flow
            # run outside ``prefect_api_watch``) nothing would ever say the API is back.
            self.lost = self.watching
            if self.settings is not None:
                self.retries = self.settings.client.max_retries
                self.logs_to_api = self.settings.logging.to_api.enabled
                self.settings.client.max_retries = 0
                self.settings.logging.to_api.enabled = False
        logger.warning(
            "the Prefect API does not answer (%s): the deploy goes on without it. Its verdicts, "
            "traffic moves and outcome are recorded in the tracking database as always; what "
            "only Prefect keeps (subflow runs, task-run states, artifacts, events, tags, the "
            "run's final state, log lines) is not recorded until the API answers again",
            why,
        )

    def back(self) -> None:
        with _LOCK:
            if not self.lost:
                return
            self.lost = False
            if self.settings is not None and self.retries is not None:
                self.settings.client.max_retries = self.retries
            if self.settings is not None and self.logs_to_api is not None:
                self.settings.logging.to_api.enabled = self.logs_to_api
        logger.warning("the Prefect API answers again: the deploy's records go to it again")


_LOCK = threading.Lock()
_STATE = _ApiState()


def api_lost() -> bool:
    """Whether the Prefect API counts as lost for the deploy running in this process (always
    False outside ``prefect_api_watch``)."""
    return _STATE.lost


def mark_api_lost(what: str, exc: BaseException) -> None:
    """The API did not answer while doing ``what``: it counts as lost (one warning)."""
    _STATE.lose(f"{type(exc).__name__} while {what}")


@dataclass
class ApiWatch:
    """What a watch saw: ``lost_at_end`` is True when the API did not answer when it ended (so
    Prefect's background senders of events and log lines cannot deliver what they hold)."""

    lost_at_end: bool = False


@contextmanager
def prefect_api_watch() -> Iterator[ApiWatch]:
    """Watch the Prefect API while the block runs (see the module's docstring). The block runs on
    its own copy of the Prefect settings, whose client retries a loss turns off and a return
    turns on again. A nested watch is the outer one; without an API URL (Prefect's temporary
    local server) nothing is watched, but a loss a subflow call meets still counts."""
    if _STATE.watching:
        yield ApiWatch()
        return
    url = PREFECT_API_URL.value()
    watch = ApiWatch()
    with temporary_settings() as settings:
        with _LOCK:
            _STATE.lost, _STATE.watching, _STATE.settings = False, True, settings
        stop = threading.Event()
        watcher = None
        if url:
            watcher = threading.Thread(
                target=contextvars.copy_context().run,
                args=(_watch, stop),
                name="prefect-api-watch",
                daemon=True,
            )
            watcher.start()
        try:
            yield watch
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=HEALTH_TIMEOUT_SECONDS + WATCH_INTERVAL_SECONDS)
            watch.lost_at_end = _STATE.lost
            with _LOCK:
                _STATE.lost, _STATE.watching, _STATE.settings = False, False, None


def _health() -> Exception | None:
    """None when the server answers its health check, else why not."""
    from prefect.client.orchestration import get_client

    # Its own client (the httpx settings keep it from being the run's), which never retries.
    with get_client(sync_client=True, httpx_settings={"timeout": HEALTH_TIMEOUT_SECONDS}) as client:
        return client.api_healthcheck()


def silence_allowed(exc: BaseException) -> float:
    """How long the health check may fail as ``exc`` did before the API counts as lost: long for
    a server that took the question but answered slowly, short for anything else."""
    slow = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, slow):
            return SLOW_LOST_AFTER_SECONDS
        current = current.__cause__ or current.__context__
    return LOST_AFTER_SECONDS


def _watch(stop: threading.Event) -> None:
    silent_since: float | None = None
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
        while not stop.wait(WATCH_INTERVAL_SECONDS):
            asked = time.monotonic()
            try:
                failure = _health()
            except Exception as exc:
                failure = exc
            if failure is None:
                silent_since = None
                _STATE.back()
                continue
            if silent_since is None:
                silent_since = asked
            allowed = silence_allowed(failure)
            if time.monotonic() - silent_since >= allowed:
                _STATE.lose(f"{type(failure).__name__} from its health check for {allowed:g} s")


@dataclass
class _SubflowCall:
    """What the body of a subflow called through ``run_subflow`` did."""

    started: bool = False
    returned: bool = False
    value: Any = None
    raised: BaseException | None = None


_CALL: contextvars.ContextVar[_SubflowCall | None] = contextvars.ContextVar(
    "deployflow_subflow_call", default=None
)


def keeps_its_result(fn: Callable[P, R]) -> Callable[P, R]:
    """Put under a subflow's ``@flow``: what its body returns (or raises) is kept for
    ``run_subflow``, which gives it back when Prefect cannot record the subflow run's end."""

    @functools.wraps(fn)
    def body(*args: P.args, **kwargs: P.kwargs) -> R:
        call = _CALL.get()
        token = _CALL.set(None)  # a subflow it calls keeps its own
        if call is not None:
            call.started = True
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            if call is not None:
                call.raised = exc
            raise
        finally:
            _CALL.reset(token)
        if call is not None:
            call.returned, call.value = True, value
        return value

    return body


def run_subflow(subflow: Flow[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``subflow`` (decorated with ``keeps_its_result``) as a subflow run. With the Prefect API
    lost, or when it cannot be reached to start the run, its function runs directly, in this run,
    and the log says so; when its body finished but the run's end could not be recorded, what the
    body returned is returned. A failure of the body itself is raised as it would have been."""
    if api_lost():
        logger.warning("%s runs as a plain function: the Prefect API does not answer", subflow.name)
        return subflow.fn(*args, **kwargs)
    call = _SubflowCall()
    token = _CALL.set(call)
    try:
        return subflow(*args, **kwargs)
    except Exception as exc:
        if call.raised is not None:
            if call.raised is exc:
                raise
            raise call.raised from None  # what the body raised, not the API's failure to record it
        if not api_unreachable(exc) or (call.started and not call.returned):
            raise
        mark_api_lost(f"running the {subflow.name} subflow", exc)
        if call.returned:
            logger.warning(
                "%s ended, but Prefect could not record its end (%s): the deploy goes on with "
                "what it decided",
                subflow.name,
                type(exc).__name__,
            )
            return call.value  # type: ignore[no-any-return]
        logger.warning(
            "%s could not start as a subflow run (%s): it runs as a plain function",
            subflow.name,
            type(exc).__name__,
        )
        return subflow.fn(*args, **kwargs)
    finally:
        _CALL.reset(token)


class PrefectApiLost(RuntimeError):
    """The Prefect API counts as lost (``api_lost``): a Prefect-only step was not tried."""


def require_prefect_api() -> None:
    """Raise ``PrefectApiLost`` while the API counts as lost: for a copy kept in Prefect among
    others, whose loss is reported rather than skipped silently.

    Raises:
        PrefectApiLost: The API counts as lost.
    """
    if api_lost():
        raise PrefectApiLost("the Prefect API does not answer")


def prefect_only(what: str, action: Callable[[], R]) -> R | None:
    """Do ``action``, a side effect only Prefect keeps (``what``: "publish the summary artifact"):
    skipped (None) while the API is lost; an unreachable API while doing it marks it lost and
    returns None. Any other failure is raised."""
    if api_lost():
        logger.debug("skipped (the Prefect API does not answer): %s", what)
        return None
    try:
        return action()
    except Exception as exc:
        if not api_unreachable(exc):
            raise
        mark_api_lost(what, exc)
        return None
