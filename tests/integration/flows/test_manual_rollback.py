"""A person's rollback through Prefect on the flow harness with in-memory backends (the fixtures of
test_release_branches): every branch, where traffic ended, what was recorded and told."""

from __future__ import annotations

import threading

import pytest
from prefect import flow

import flows.manual_rollback
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.providers.base import BackendError, RouterState
from deployflow.spec import ServiceSpec
from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger
from flows.manual_rollback import (
    RollbackRequest,
    RollbackResult,
    finish_rollback,
    roll_back_now,
)
from tests.integration.flows import test_release_branches as branches
from tests.integration.flows.helpers import make_spec, running, serving

pytestmark = pytest.mark.integration

deploy, ledger, service = branches.deploy, branches.ledger, branches.service
no_retry_pauses = branches.no_retry_pauses


@flow(name="manual-rollback-under-test")
def run_manual_rollback(
    spec: ServiceSpec, backends: Backends, request: RollbackRequest
) -> RollbackResult:
    return finish_rollback(roll_back_now(spec, backends, request), spec, backends)


@pytest.fixture
def undo(deploy, ledger: Ledger, service: FakeService):
    """Roll back in the environment of this test's ``deploy``."""

    def run(
        version: str | None = None,
        reason: str = "checkout errors",
        spec: ServiceSpec | None = None,
        annotators: tuple = (),
    ) -> RollbackResult:
        backends = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            notifiers=(service.notifier,),
            ledger=ledger,
            http_transport=service.transport,
            annotators=annotators,
        )
        request = RollbackRequest(deploy.environment, version, reason, "alice", wait_seconds=30)
        return run_manual_rollback(spec or make_spec(deploy.tmp_path), backends, request)

    return run


def row(ledger: Ledger, deployment_id: int | None) -> dict:
    assert deployment_id is not None
    with ledger._sessions() as s:
        return repository.deployment_to_dict(repository.get_deployment(s, deployment_id))


def released(deploy, service: FakeService, *versions: str) -> None:
    """Release each version in turn (direct: one stage, the history a rollback chooses from)."""
    direct = make_spec(deploy.tmp_path, strategy={"kind": "direct", "observe": "10ms"})
    for version in versions:
        outcome = deploy(version, direct)
        assert outcome.status == "succeeded", outcome.message
    service.router.changes.clear()
    service.notifier.messages.clear()


def test_rolls_back_to_the_last_good_version_in_one_router_call(deploy, undo, service, ledger):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    assert running(service) == {"v2"}
    result = undo()
    outcome = result.outcome
    assert result.ok, outcome.message
    assert (outcome.status, outcome.version, outcome.previous_version) == (
        "rolled_back",
        "v2",
        "v1",
    )
    assert serving(service, "v1")
    assert running(service) == {"v1"}  # v1 started again, v2 stopped
    v1 = service.target.running["v1"]
    assert service.router.changes == [RouterState(v1.address, None, 0)]  # one call
    assert outcome.rollback is not None
    assert outcome.rollback.verified
    assert outcome.rollback.restore_seconds is not None
    recorded = row(ledger, outcome.deployment_id)
    assert recorded["strategy"] == "rollback"
    assert recorded["status"] == "rolled_back"
    assert recorded["details"]["strategy_rationale"] == "rollback asked by alice: checkout errors"
    [incident] = recorded["incidents"]
    assert (incident["metric"], incident["reason"]) == (
        "manual",
        "rollback asked by alice: checkout errors",
    )
    # Told like an automatic rollback, and the live version is v1 for the next deploy.
    # As an automatic rollback's: the notice once traffic is back, then the check of v1.
    notice, verified = service.notifier.messages
    assert notice == (
        ":rewind: shop v2 rolled back to v1: rollback asked by alice: checkout errors\n"
        "> All traffic is on v1; checking it and gathering the evidence\n"
        f"> Incident report: `deployflow report {outcome.deployment_id}`"
    )
    assert verified == ":white_check_mark: v1 verified healthy after the rollback"
    with ledger._sessions() as s:
        reports = repository.get_deployment(s, outcome.require_id()).reports
        assert [r.kind for r in reports] == ["incident"]
        assert "alice" in reports[0].markdown
    deployed = ledger.deployed("shop", deploy.environment)
    assert deployed is not None
    assert deployed.version == "v1"


def test_told_once_on_the_dashboards_without_a_region(deploy, undo, service):
    from pydantic import SecretStr

    from deployflow.fakes.grafana_api import FakeGrafanaAPI
    from deployflow.providers.grafana import GrafanaAnnotator

    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    grafana = FakeGrafanaAPI(token="glsa-rb").start()
    try:
        regions: list[str] = []

        class Annotator(GrafanaAnnotator):
            def end_region(self, text: str):  # type: ignore[no-untyped-def]
                regions.append(text)  # there is none: closing one would fail and warn
                return super().end_region(text)

        annotator = Annotator(SecretStr("glsa-rb"), grafana.base_url, "shop")
        result = undo(annotators=(annotator,))
        texts = [a["text"] for a in grafana.annotations]
    finally:
        grafana.stop()
    assert result.ok, result.outcome.message
    assert texts == [
        ":rewind: shop v2 rolled back to v1: rollback asked by alice: checkout errors\n"
        "> All traffic is on v1; checking it and gathering the evidence",
        "v2 rolled back: rolled back to v1: rollback asked by alice: checkout errors",
    ]
    assert regions == []


def test_a_version_still_running_is_reused(deploy, undo, service):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    service.target.start("v1")  # kept warm
    before = service.target.running["v1"]
    result = undo()
    assert result.ok, result.outcome.message
    assert service.target.running["v1"] is before
    assert serving(service, "v1")


def test_a_named_version_and_a_second_rollback_goes_further_back(deploy, undo, service):
    service.run_stable("v1")
    released(deploy, service, "v2", "v3")
    assert undo("v1").outcome.previous_version == "v1"
    assert serving(service, "v1")
    # Then back to the last good version that is not v1 and was not rolled away from: v2.
    second = undo()
    assert second.ok, second.outcome.message
    assert (second.outcome.version, second.outcome.previous_version) == ("v1", "v2")
    assert serving(service, "v2")


@pytest.mark.parametrize(
    ("version", "why"),
    [
        ("v2", "v2 is the live version of shop in"),
        ("v9", "v9 never completed a release of shop in"),
    ],
)
def test_refused_versions_touch_nothing(deploy, undo, service, ledger, version, why):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    rows_before = len(ledger.past_deploys("shop", deploy.environment))
    result = undo(version)
    assert result.refused
    assert not result.ok
    assert result.outcome.message.startswith(f"refused: {why}")
    assert service.router.changes == []
    assert running(service) == {"v2"}
    assert result.outcome.deployment_id is None
    assert len(ledger.past_deploys("shop", deploy.environment)) == rows_before


def test_refused_when_the_schema_seam_says_no(deploy, undo, service, monkeypatch):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    monkeypatch.setattr(
        flows.manual_rollback, "schema_allows", lambda *a: "revision 0042 dropped a column"
    )
    result = undo()
    assert result.refused
    assert "v1 cannot run with the live database schema: revision 0042" in result.outcome.message
    assert service.router.changes == []


def test_a_version_that_does_not_start_leaves_traffic_alone(deploy, undo, service, ledger):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    service.target.fail_start.add("v1")
    result = undo()
    assert not result.ok
    assert result.outcome.status == "failed"
    assert "v1 did not start" in result.outcome.message
    assert service.router.changes == []
    assert serving(service, "v2")
    assert row(ledger, result.outcome.deployment_id)["status"] == "failed"


def test_a_router_that_refuses_fails_the_rollback_and_keeps_the_bad_version(
    deploy, undo, service, monkeypatch
):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")

    def refuse(*args: object) -> None:
        raise BackendError("haproxy: permission denied on the admin socket")

    monkeypatch.setattr(service.router, "set_split", refuse)
    result = undo()
    assert not result.ok
    assert result.outcome.status == "failed"
    assert "ROLLBACK FAILED" in result.outcome.message
    assert "v2" in running(service)  # the router may still send it traffic


def test_an_unhealthy_target_is_rolled_back_to_but_not_ok(deploy, undo, service, ledger):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    service.behave("v1", broken_paths={"/api/checkout"})
    result = undo()
    assert not result.ok
    assert result.outcome.status == "rolled_back"
    assert "v1 is NOT verified healthy" in result.outcome.message
    assert serving(service, "v1")
    assert ledger.deployed("shop", deploy.environment).version == "v1"


def test_a_running_deploy_is_asked_to_roll_back_and_waited_for(deploy, undo, service, ledger):
    service.run_stable("v1")  # the tracking database knows it as v2's previous version
    released(deploy, service, "v2")
    spec = make_spec(
        deploy.tmp_path,
        strategy={"kind": "canary", "steps": [5, 25, 50, 100], "observe": "3s"},
    )
    ended: dict[str, object] = {}
    release = threading.Thread(target=lambda: ended.update(outcome=deploy("v3", spec)))
    release.start()
    try:
        # The rollback starts while v3's first stage is observed.
        from deployflow.polling import wait_for

        wait_for(lambda: ledger.unfinished("shop", deploy.environment), timeout=30)
        wait_for(lambda: "v3" in running(service), timeout=30)
        result = undo(reason="v3 breaks search")
    finally:
        release.join(timeout=60)
    v3 = ended["outcome"]
    assert v3.status == "rolled_back", v3.message  # type: ignore[attr-defined]
    assert "rollback asked by alice: v3 breaks search" in v3.rollback.trigger.reason  # type: ignore[attr-defined]
    # A person's rollback, named so in the incident and the DORA figures, not a dead canary.
    assert v3.rollback.trigger.metric == "manual"  # type: ignore[attr-defined]
    assert result.ok, result.outcome.message
    assert result.outcome.deployment_id is None  # the deploy did it; no second rollback
    assert "was asked to roll back and did; v2 serves all the traffic" in result.outcome.message
    assert serving(service, "v2")
    assert running(service) == {"v2"}


def test_keep_previous_makes_the_rollback_one_router_call_without_a_start(
    deploy, undo, service, ledger
):
    service.run_stable("v1")
    spec = make_spec(deploy.tmp_path, keep_previous="1h")
    outcome = deploy("v2", spec)
    assert outcome.status == "succeeded", outcome.message
    assert "v1 kept running until" in outcome.message
    assert running(service) == {"v1", "v2"}  # v1 warm, no traffic
    assert serving(service, "v2")
    assert row(ledger, outcome.deployment_id)["details"]["kept_previous"]["version"] == "v1"
    warm = service.target.running["v1"]
    service.router.changes.clear()
    result = undo(spec=spec)
    assert result.ok, result.outcome.message
    assert service.target.running["v1"] is warm  # not started again
    assert service.router.changes == [RouterState(warm.address, None, 0)]
    assert running(service) == {"v1"}
    # Live again: never stopped as a kept version by a later sweep.
    kept = ledger.kept_versions("shop", deploy.environment)
    assert kept == []


def test_a_kept_version_is_stopped_once_its_window_ends(deploy, service, ledger):
    from datetime import UTC, datetime

    from deployflow.polling import wait_for

    service.run_stable("v1")
    spec = make_spec(deploy.tmp_path, keep_previous="300ms")
    outcome = deploy("v2", spec)
    assert outcome.status == "succeeded", outcome.message
    assert outcome.kept_previous is not None
    assert running(service) == {"v1", "v2"}
    until = outcome.kept_previous[1]
    wait_for(lambda: datetime.now(UTC) >= until, timeout=10, what="the end of the window")
    # The next deploy stops it before anything else, then releases v3 as usual.
    third = deploy("v3")
    assert third.status == "succeeded", third.message
    assert running(service) == {"v3"}  # v1 stopped by the sweep, v2 retired by the release
    assert ledger.kept_versions("shop", deploy.environment) == []


def test_the_retire_flow_stops_expired_versions_only(deploy, service, ledger):
    from datetime import UTC, datetime, timedelta

    from tasks.keep import retire_kept_versions

    service.run_stable("v1")
    outcome = deploy("v2", make_spec(deploy.tmp_path, keep_previous="1h"))
    assert running(service) == {"v1", "v2"}

    @flow(name="retire-under-test")
    def sweep() -> list[str]:
        return retire_kept_versions(
            ledger, service.router, service.target, service="shop", environment=deploy.environment
        )

    assert sweep() == []  # inside the window
    assert running(service) == {"v1", "v2"}
    # The window ended (as recorded): the next sweep stops v1, never v2 which has the traffic.
    ended = datetime.now(UTC) - timedelta(seconds=1)
    with ledger._session() as s:
        r = repository.get_deployment(s, outcome.require_id())
        details = dict(r.details)
        details["kept_previous"] = {**details["kept_previous"], "until": ended.isoformat()}
        repository.update_deployment(s, r.id, details=details)
    [line] = sweep()
    assert line.startswith("stopped v1: its keep_previous window ended")
    assert running(service) == {"v2"}
    assert serving(service, "v2")
    assert sweep() == []  # once


def test_a_rollback_stopped_by_ctrl_c_before_its_switch_says_what_serves(
    deploy, undo, service, ledger
):
    """Ctrl-C while the version to return to starts: nothing moved, the bad version still
    serves; what the CLI reports (`rollback --json`) says so, with the row's id."""
    service.run_stable("v1")
    released(deploy, service, "v2")
    start = service.target.start

    def ctrl_c_while_starting(version: str):
        start(version)
        raise KeyboardInterrupt

    service.target.start = ctrl_c_while_starting  # type: ignore[method-assign]
    before = len(flows.manual_rollback.ROLLBACKS_INTERRUPTED)
    with pytest.raises(KeyboardInterrupt):
        undo()
    assert serving(service, "v2")
    [reached] = flows.manual_rollback.ROLLBACKS_INTERRUPTED[before:]
    assert reached["interruption"] == {
        "signal": "SIGINT",
        "traffic_restored": False,
        "serving": "v2",
    }
    assert isinstance(reached["deployment_id"], int)
