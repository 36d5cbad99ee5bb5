"""One deploy per service and environment, held as a Prefect global concurrency limit on a real
Prefect server: a second deploy is refused (the default) or waits (``concurrency: wait``)."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client

import flows.deploy_steps
from blocks.service_spec import ServiceSpecBlock
from deployflow.concurrency import DeployRefused, limit_name
from deployflow.polling import wait_for
from deployments.cli import main
from flows.deploy import deploy
from tasks.concurrency import deploy_slot

pytestmark = pytest.mark.integration

log = logging.getLogger("test-concurrency")


@pytest.fixture(autouse=True)
def server(prefect_server: str) -> str:
    return prefect_server


def test_second_deploy_is_refused_and_the_limit_is_strict_with_one_slot():
    with deploy_slot("shop", "conc-a", "refuse", log) as name:
        with pytest.raises(DeployRefused) as refused, deploy_slot("shop", "conc-a", "refuse", log):
            pytest.fail("a second deploy of shop to conc-a got the slot")
        # Another environment and another service are not held up.
        with (
            deploy_slot("shop", "conc-b", "refuse", log),
            deploy_slot("cart", "conc-a", "refuse", log),
        ):
            pass

    message = str(refused.value)
    assert "another deploy of shop to conc-a is running" in message
    assert name in message
    assert "concurrency: wait" in message
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(limit_name("shop", "conc-a"))
    assert limit.limit == 1
    assert limit.active
    assert limit.active_slots == 0  # released when the first deploy ended
    with deploy_slot("shop", "conc-a", "refuse", log):  # free again
        pass


def test_waiting_deploy_starts_when_the_running_one_ends(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger=log.name)
    events: list[str] = []
    first_ends = threading.Event()

    def second() -> None:
        with deploy_slot("shop", "conc-wait", "wait", log):
            events.append("second started")

    with deploy_slot("shop", "conc-wait", "refuse", log):
        # The thread sees the test server's settings (Prefect keeps them in context variables).
        in_context = contextvars.copy_context().run
        waiter = threading.Thread(target=in_context, args=(second,), daemon=True)
        waiter.start()
        wait_for(
            lambda: "waiting for it to end" in caplog.text,
            timeout=120,  # a loaded server answers 503 for a while; the client retries
            interval=0.05,
            what="the second deploy to say it waits",
        )
        assert events == []  # still waiting while the first holds the slot
        events.append("first ended")
        first_ends.set()
    waiter.join(timeout=120)  # the server's Retry-After is at most about 40 s

    assert not waiter.is_alive(), "the waiting deploy never got the slot"
    assert events == ["first ended", "second started"]


def unreachable_spec(tmp_path: Path) -> dict[str, object]:
    """A spec whose every backend is unreachable: a deploy that touched one would fail on it."""
    return {
        "service": "shop",
        "target": {"kind": "local-process", "command": [sys.executable],
                   "state_dir": str(tmp_path)},
        "router": {"kind": "haproxy", "admin_socket": "no-such-socket",
                   "frontend_url": "http://frontend.invalid"},
        "metrics": {"kind": "prometheus", "url": "http://prometheus.invalid",
                    "queries": {"error_rate": "{version}", "p95_latency": "{version}",
                                "request_count": "{version}"}},
    }  # fmt: skip


def test_deploy_flow_with_a_saved_service_is_refused_before_touching_any_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    spec = unreachable_spec(tmp_path)
    ServiceSpecBlock(spec=yaml.safe_dump(spec), base_dir=str(tmp_path)).save(
        "shop-conc", overwrite=True
    )
    # What a worker does with the form's choice: the API stores a reference to the block.
    chosen = {"$ref": {"block_document_slug": "servicespec/shop-conc"}}
    params = deploy.validate_parameters({"version": "v2", "service": chosen})
    assert isinstance(params["service"], ServiceSpecBlock)
    assert params["service"].get_spec().router.admin_socket == tmp_path / "no-such-socket"

    # The slot's holder is this test, not a deploy with a row in the tracking database; say it
    # is alive there (a holder the database does not see running is waited out, not refused).
    monkeypatch.setattr(flows.deploy_steps, "live_deploy_in", lambda *args: True)
    with deploy_slot("shop", "conc-flow", "refuse", log):
        state = deploy(**{**params, "environment": "conc-flow"}, return_state=True)

    assert state.is_failed()
    assert "refused: another deploy of shop to conc-flow is running" in (state.message or "")


def test_the_cli_deploys_a_saved_service_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    ServiceSpecBlock(spec=yaml.safe_dump(unreachable_spec(tmp_path)), base_dir=str(tmp_path)).save(
        "shop-cli", overwrite=True
    )
    # A name nothing is saved under is bad input: exit 2, nothing started.
    assert main(["deploy", "--service", "shop-nope", "--version", "v2"]) == 2
    assert "--service: no ServiceSpecBlock named 'shop-nope'" in capsys.readouterr().err

    # The saved one runs the deploy flow with that service: held slot, so it is refused before
    # any backend is touched, and the refusal names the block's service.
    monkeypatch.setattr(flows.deploy_steps, "live_deploy_in", lambda *args: True)
    with deploy_slot("shop", "conc-cli", "refuse", log):
        code = main(
            ["deploy", "--service", "shop-cli", "--version", "v2", "--environment", "conc-cli",
             "--json"]
        )  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert "refused: another deploy of shop to conc-cli is running" in result["message"]
