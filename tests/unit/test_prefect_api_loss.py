"""A deploy that loses the Prefect API goes on without it (``tasks.prefect_api``): which errors
mean the API is gone, what a subflow call gives back when Prefect cannot record it, which side
effects are skipped, and the watch that turns the client's retries off and on again."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    get_current_settings,
    temporary_settings,
)

from deployflow.polling import wait_for
from tasks import prefect_api
from tasks.prefect_api import (
    api_lost,
    api_unreachable,
    keeps_its_result,
    prefect_api_watch,
    prefect_only,
    run_subflow,
    silence_allowed,
)


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused")


def status_error(code: int, cls: type[httpx.HTTPStatusError] = httpx.HTTPStatusError) -> Exception:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/flow_runs/")
    return cls("boom", request=request, response=httpx.Response(code, request=request))


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """As inside a deploy's watch (without its health-check thread)."""
    monkeypatch.setattr(prefect_api, "_STATE", prefect_api._ApiState(watching=True))


@pytest.fixture
def unwatched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefect_api, "_STATE", prefect_api._ApiState())


def raised_from(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("the flow run's state could not be set") from cause
    except RuntimeError as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "unreachable"),
    [
        (refused(), True),
        (httpx.ReadTimeout("timed out"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
        (ConnectionRefusedError(111, "refused"), True),
        (status_error(503), True),
        (status_error(500, PrefectHTTPStatusError), True),
        (status_error(429), True),
        (status_error(404, PrefectHTTPStatusError), False),  # an answer: the object is not there
        (status_error(422), False),
        (ValueError("bad"), False),
        (raised_from(refused()), True),
        (raised_from(ValueError("bad")), False),
    ],
)
def test_which_errors_say_the_api_is_unreachable(exc: BaseException, unreachable: bool) -> None:
    assert api_unreachable(exc) is unreachable


def test_an_exception_raised_while_handling_a_refused_connection_counts() -> None:
    def handled() -> None:
        try:
            raise refused()
        except httpx.ConnectError:
            raise KeyError("while handling it") from None

    with pytest.raises(KeyError) as raised:
        handled()
    # ``from None`` hides the cause from tracebacks, not from __context__: still the API.
    assert api_unreachable(raised.value) is True


class FakeSubflow:
    """Behaves as Prefect's call of a subflow does when its API fails at a chosen moment:
    ``fails`` "before" the body runs (creating the run), "after" it (recording its end), or
    never."""

    name = "progressive-rollout"

    def __init__(self, body: Callable[..., Any], fails: str | None) -> None:
        self.fn = keeps_its_result(body)
        self.fails = fails
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.fails == "before":
            raise refused()
        try:
            value = self.fn(*args, **kwargs)
        except Exception as exc:
            if self.fails == "after":  # its Failed state cannot be recorded either
                raise refused() from exc
            raise
        if self.fails == "after":
            raise refused()
        return value


def test_a_subflow_whose_end_prefect_cannot_record_gives_back_what_it_decided() -> None:
    ran: list[int] = []

    def stages(weight: int) -> list[str]:
        ran.append(weight)
        return [f"{weight}%: promote"]

    subflow = FakeSubflow(stages, fails="after")
    assert run_subflow(subflow, 50) == ["50%: promote"]  # type: ignore[call-overload]
    assert ran == [50]  # not run a second time
    assert api_lost()


def test_a_subflow_that_cannot_start_runs_as_a_plain_function_and_so_do_later_ones() -> None:
    ran: list[str] = []
    subflow = FakeSubflow(lambda: ran.append("rollback") or "restored", fails="before")
    assert run_subflow(subflow) == "restored"  # type: ignore[call-overload]
    assert ran == ["rollback"]
    assert api_lost()
    later = FakeSubflow(lambda: "verified", fails=None)
    assert run_subflow(later) == "verified"  # type: ignore[call-overload]
    assert later.calls == 0  # not tried through Prefect while the API is lost


def test_a_subflow_that_failed_raises_its_own_failure_not_the_apis() -> None:
    def broken() -> None:
        raise ValueError("the router refused")

    with pytest.raises(ValueError, match="the router refused"):
        run_subflow(FakeSubflow(broken, fails="after"))  # type: ignore[call-overload]


def test_a_connection_error_of_the_subflows_own_backends_is_not_an_api_loss() -> None:
    def prometheus_down() -> None:
        raise httpx.ConnectError("prometheus: connection refused")

    subflow = FakeSubflow(prometheus_down, fails=None)
    with pytest.raises(httpx.ConnectError, match="prometheus"):
        run_subflow(subflow)  # type: ignore[call-overload]
    assert not api_lost()


def test_a_subflow_with_the_api_answering_runs_once_through_prefect() -> None:
    subflow = FakeSubflow(lambda: "promoted", fails=None)
    assert run_subflow(subflow) == "promoted"  # type: ignore[call-overload]
    assert subflow.calls == 1
    assert not api_lost()


def test_prefect_only_side_effects_are_skipped_once_the_api_is_lost() -> None:
    done: list[str] = []

    def unreachable() -> None:
        raise refused()

    assert prefect_only("publish the summary artifact", unreachable) is None
    assert api_lost()
    assert prefect_only("tag the run", lambda: done.append("tagged")) is None
    assert done == []


def test_a_prefect_only_side_effect_that_fails_otherwise_still_raises() -> None:
    def invalid() -> None:
        raise ValueError("artifact keys allow lowercase letters")

    with pytest.raises(ValueError, match="lowercase"):
        prefect_only("publish the summary artifact", invalid)
    assert not api_lost()


def test_the_watch_turns_retries_off_while_the_api_is_gone_and_on_when_it_answers(
    unwatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_api, "WATCH_INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(prefect_api, "LOST_AFTER_SECONDS", 0.03)
    server_up = threading.Event()
    server_up.set()
    monkeypatch.setattr(prefect_api, "_health", lambda: None if server_up.is_set() else refused())
    retries = PREFECT_CLIENT_MAX_RETRIES.value()
    assert retries > 0
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        with prefect_api_watch():
            assert not api_lost()
            server_up.clear()
            wait_for(api_lost, timeout=5, interval=0.01, what="the API to count as lost")
            assert get_current_settings().client.max_retries == 0
            assert get_current_settings().logging.to_api.enabled is False
            server_up.set()
            wait_for(lambda: not api_lost(), timeout=5, interval=0.01, what="the API back")
            assert get_current_settings().client.max_retries == retries
            assert get_current_settings().logging.to_api.enabled is True
            server_up.clear()
            wait_for(api_lost, timeout=5, interval=0.01, what="the API lost again")
        assert not api_lost()
        assert PREFECT_CLIENT_MAX_RETRIES.value() == retries  # only the deploy's copy changed


def test_a_health_check_that_raises_counts_as_no_answer(
    unwatched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_api, "WATCH_INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(prefect_api, "LOST_AFTER_SECONDS", 0.0)

    def broken() -> Exception | None:
        raise RuntimeError("no client")

    monkeypatch.setattr(prefect_api, "_health", broken)
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4200/api"}), prefect_api_watch():
        wait_for(api_lost, timeout=5, interval=0.01, what="the API to count as lost")


def test_outside_a_watch_a_loss_does_not_last(unwatched: None) -> None:
    """Nothing would ever say the API is back: each call tries Prefect again."""
    assert run_subflow(FakeSubflow(lambda: "kept", fails="after")) == "kept"  # type: ignore[call-overload]
    assert not api_lost()
    later = FakeSubflow(lambda: "promoted", fails=None)
    assert run_subflow(later) == "promoted"  # type: ignore[call-overload]
    assert later.calls == 1


def test_a_slow_server_is_given_longer_than_one_that_refuses() -> None:
    slow = raised_from(httpx.ReadTimeout("timed out"))
    assert silence_allowed(slow) == prefect_api.SLOW_LOST_AFTER_SECONDS
    assert silence_allowed(refused()) == prefect_api.LOST_AFTER_SECONDS
    assert silence_allowed(httpx.ConnectTimeout("unreachable")) == prefect_api.LOST_AFTER_SECONDS
    assert silence_allowed(status_error(503)) == prefect_api.LOST_AFTER_SECONDS
    assert prefect_api.SLOW_LOST_AFTER_SECONDS > prefect_api.LOST_AFTER_SECONDS


class Slot:
    """A held concurrency slot whose release fails as ``fails`` says."""

    def __init__(self, fails: Exception | None) -> None:
        self.fails = fails

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc_info: object) -> bool:
        if self.fails is not None:
            raise self.fails
        return False


def give_back_slot(fails: Exception | None, caplog: pytest.LogCaptureFixture) -> bool:
    import logging

    from tasks.concurrency import give_back

    log = logging.getLogger("test-slot")
    with caplog.at_level(logging.WARNING, logger="test-slot"):
        return give_back(
            Slot(fails), "deployflow:deploy:shop:prod", "shop", "prod", log, *(None,) * 3
        )


@pytest.mark.parametrize(
    "failure",
    [refused(), status_error(404, PrefectHTTPStatusError)],
    ids=["api gone", "lease unknown after a restart"],
)
def test_a_slot_that_cannot_be_given_back_is_said_not_raised(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    assert give_back_slot(failure, caplog) is False
    assert "could not be given back" in caplog.text
    assert "the next deploy of shop to prod releases it" in caplog.text


def test_a_slot_release_refused_for_another_reason_still_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        give_back_slot(status_error(409, PrefectHTTPStatusError), caplog)
