"""A Prefect server killed and started again: nothing a deploy needs afterwards lived only in its
memory. The slot of the service's concurrency limit, whose lease the server kept in memory, is
checked against the tracking database's lease and released when nobody alive holds it."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployflow.concurrency import DeployRefused, limit_name
from tasks.concurrency import deploy_slot
from tests.integration.prefect.conftest import RestartablePrefectServer

pytestmark = pytest.mark.integration

log = logging.getLogger("test-prefect-restart")


@pytest.fixture(scope="module")
def restartable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartablePrefectServer]:
    with RestartablePrefectServer(tmp_path_factory.mktemp("prefect-restart")) as server:
        yield server


@contextlib.contextmanager
def using(server: RestartablePrefectServer) -> Iterator[None]:
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def active_slots(name: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_a_slot_held_across_a_server_restart_is_released_once_its_holder_is_dead(
    restartable: RestartablePrefectServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "2")
    caplog.set_level(logging.INFO, logger=log.name)
    name = limit_name("shop", "restart")
    held = contextlib.ExitStack()
    with using(restartable):
        held.enter_context(deploy_slot("shop", "restart", "refuse", log))
        assert active_slots(name) == 1
    # The deploy that holds the slot goes on; the server it took it from restarts.
    restartable.kill()
    restartable.start()
    with using(restartable):
        assert active_slots(name) == 1  # the slot survived; its lease did not

        # The tracking database sees the holder alive: refused, the slot untouched.
        with (
            pytest.raises(DeployRefused),
            deploy_slot("shop", "restart", "refuse", log, holder_alive=lambda: True),
        ):
            pytest.fail("a second deploy got the slot of a live one")
        assert active_slots(name) == 1

        # Nobody alive holds it: released once that has been so for a lease period, then taken.
        got: list[float] = []
        started = time.monotonic()

        failed: list[BaseException] = []

        def second() -> None:
            try:
                with deploy_slot("shop", "restart", "refuse", log, holder_alive=lambda: False):
                    got.append(time.monotonic() - started)
                    assert active_slots(name) == 1
            except BaseException as exc:
                failed.append(exc)

        waiter = threading.Thread(
            target=contextvars.copy_context().run, args=(second,), daemon=True
        )
        waiter.start()
        waiter.join(timeout=60)
        assert not failed, failed
        assert got, "the slot the restart orphaned was never released"
        assert got[0] < 30
        assert (
            "released the Prefect concurrency limit 'deployflow:deploy:shop:restart'" in caplog.text
        )
        assert active_slots(name) == 0
    with contextlib.suppress(Exception):  # its lease is gone with the old server's memory
        held.close()
