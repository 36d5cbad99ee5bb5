"""Every branch of the deploy flow, through Prefect (tasks, subflows, artifacts) on the test
harness, with in-memory backends: what the outcome is, where traffic ended, what was recorded."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from prefect import Task, flow

import flows.deploy
import flows.deploy_steps
import flows.rollback
import flows.rollout
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService, InMemoryRouter
from deployflow.providers.base import BackendError, FinalBackendError, Instance
from deployflow.reconcile import LiveVersionLost
from deployflow.release import ReleaseOutcome
from deployflow.spec import ServiceSpec
from deployflow.tracking import repository
from deployflow.tracking.ledger import Ledger
from flows.deploy import ReleaseRequest, release
from tasks.complete import complete
from tests.integration.flows.helpers import make_spec, recorded, running, serving

_environments = itertools.count()


@flow(name="release-under-test")
def run_release(spec: ServiceSpec, backends: Backends, request: ReleaseRequest) -> ReleaseOutcome:
    outcome = release(spec, backends, request)
    complete(outcome, backends.ledger)
    return outcome


@pytest.fixture(autouse=True)
def no_retry_pauses(monkeypatch):
    """The tasks still retry as configured; only the pause between attempts goes."""
    for module in (flows.deploy, flows.deploy_steps, flows.rollout, flows.rollback):
        for value in vars(module).values():
            if isinstance(value, Task) and value.retries:
                monkeypatch.setattr(value, "retry_delay_seconds", 0)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return Ledger.for_url(f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'tracking.db'}")


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def deploy(prefect_server, ledger, service, tmp_path):
    """Release a version of the fake service; each test gets its own environment."""
    environment = f"env{next(_environments)}"

    def run(version: str, spec: ServiceSpec | None = None, **request: object) -> ReleaseOutcome:
        """Release ``version``; ``run.environment`` is this test's environment."""
        backends = Backends(
            target=service.target,
            router=service.router,
            metrics=service.metrics,
            notifiers=(service.notifier,),
            ledger=ledger,
            http_transport=service.transport,
        )
        req = ReleaseRequest(version, environment, **request)  # type: ignore[arg-type]
        return run_release(spec or make_spec(tmp_path), backends, req)

    run.environment = environment  # type: ignore[attr-defined]
    run.tmp_path = tmp_path  # type: ignore[attr-defined]
    return run


def test_healthy_canary_is_promoted_through_every_stage(deploy, service, ledger):
    service.run_stable("v1")
    outcome = deploy("v2")
    assert outcome.status == "succeeded", outcome.message
    assert [s.weight for s in outcome.stages] == [5, 25, 50, 100]
    assert serving(service, "v2")
    assert running(service) == {"v2"}
    row = recorded(ledger, outcome)
    assert row["status"] == "succeeded"
    assert [s["weight"] for s in row["stages"]] == [5, 25, 50, 100]
    assert "Deploying *shop* `v2`" in service.notifier.messages[0]


def test_a_failing_check_blocks_before_anything_is_touched(deploy, service, ledger, tmp_path):
    service.run_stable("v1")
    spec = make_spec(
        tmp_path, pre_checks={"checkout": str(tmp_path), "build": {"command": ["false"]}}
    )
    outcome = deploy("v2", spec)
    assert outcome.status == "aborted"
    assert outcome.message.startswith("blocked before any traffic moved: build failed")
    assert service.router.changes == []
    assert running(service) == {"v1"}
    checks = {c["name"]: c["status"] for c in recorded(ledger, outcome)["checks"]}
    assert checks["build"] == "failed"
    assert checks["migrations"] == "skipped"


def test_a_canary_that_does_not_start_leaves_traffic_alone(deploy, service, ledger):
    service.run_stable("v1")
    service.target.fail_start.add("v2")
    outcome = deploy("v2")
    assert outcome.status == "failed"
    assert "v2 did not start" in outcome.message
    assert service.router.changes == []
    assert serving(service, "v1")
    assert recorded(ledger, outcome)["status"] == "failed"


def test_a_start_that_fails_is_never_started_again(deploy, service):
    # A second start of a github-actions target would dispatch a second workflow run: a failed
    # start fails the deploy, final (a run that failed) or not (a connection reset).
    service.run_stable("v1")
    attempts: list[str] = []

    def start(version: str) -> Instance:
        attempts.append(version)
        if version == "v2":  # a pipeline run that ran and failed: another would fail the same way
            raise FinalBackendError("run https://github.example/runs/7 ended with failure")
        raise BackendError("connection reset while starting")

    service.target.start = start  # type: ignore[method-assign]
    assert deploy("v2").status == "failed"
    assert deploy("v3").status == "failed"
    assert attempts == ["v2", "v3"]
    assert running(service) == {"v1"}


def test_a_router_whose_preflight_fails_blocks_the_deploy_before_anything_starts(
    deploy, service, ledger
):
    service.run_stable("v1")

    def rejected() -> None:  # what NginxRouter.preflight raises when nginx -t fails
        raise BackendError('nginx -t rejects the configuration as it is: unknown directive "x"')

    service.router.preflight = rejected  # type: ignore[attr-defined]
    outcome = deploy("v2")
    assert outcome.status == "aborted"
    assert outcome.message.startswith("blocked before anything started: nginx -t rejects")
    assert running(service) == {"v1"}
    assert service.router.changes == []
    assert recorded(ledger, outcome)["status"] == "aborted"


def test_a_bad_stage_rolls_back_to_stable_and_records_the_incident(deploy, service, ledger):
    from prefect.context import FlowRunContext

    service.run_stable("v1")
    service.behave("v3", error_rate=0.2)
    set_split = service.router.set_split
    restores: list[str] = []

    def recording(stable, canary, canary_weight):
        if canary_weight == 0:
            context = FlowRunContext.get()
            restores.append(context.flow.name if context and context.flow else "?")
        set_split(stable, canary, canary_weight)

    service.router.set_split = recording  # type: ignore[method-assign]
    outcome = deploy("v3")
    assert outcome.status == "rolled_back", outcome.message
    # Traffic went back inside the rollout, the moment the verdict came; the rollback read the
    # router to confirm it and did not restore (nor say it restored) a second time.
    assert restores == ["progressive-rollout"]
    assert outcome.rollback is not None
    assert outcome.rollback.restore_seconds is not None
    assert outcome.rollback.restore_seconds == outcome.stages[0].restore_seconds
    assert len(outcome.stages) == 1
    assert outcome.stages[0].weight == 5
    assert outcome.rollback is not None
    assert outcome.rollback.verified
    assert outcome.rollback.trigger.metric == "error_rate"
    assert serving(service, "v1")
    assert running(service) == {"v1"}
    row = recorded(ledger, outcome)
    assert row["status"] == "rolled_back"
    assert row["incidents"][0]["metric"] == "error_rate"
    assert row["incidents"][0]["evidence"]["verified"] is True
    assert any("rolled back to v1" in m for m in service.notifier.messages)


def test_a_broken_critical_path_after_promotion_rolls_back(deploy, service, ledger):
    service.run_stable("v1")
    service.behave("v4", broken_paths=frozenset({"/api/checkout"}))
    outcome = deploy("v4")
    assert outcome.status == "rolled_back", outcome.message
    assert [s.weight for s in outcome.stages] == [5, 25, 50, 100]
    assert outcome.rollback is not None
    assert outcome.rollback.trigger.metric == "critical_path"
    assert "post-deploy verification failed: smoke: checkout" in outcome.message
    assert serving(service, "v1")
    assert running(service) == {"v1"}


class RefusesRollback(InMemoryRouter):
    """Serves users but refuses to take the canary out (a locked backend, a vanished socket)."""

    refusing = True

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        if canary is None and self.refusing:
            raise BackendError("router refused: backend app is locked")
        super().set_split(stable, canary, canary_weight)


class DiesAfterFirstSplit(InMemoryRouter):
    """Takes the first canary weight, then is gone (HAProxy killed mid-rollout)."""

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        super().set_split(stable, canary, canary_weight)
        self.down = True


class DiesBeforeSecondStage(InMemoryRouter):
    """Takes the first stage's weight, then is gone when the second stage asks for more
    (HAProxy killed between two stages)."""

    def set_split(self, stable: Instance, canary: Instance | None, canary_weight: int) -> None:
        if canary is not None and canary_weight > 5:
            self.down = True
        super().set_split(stable, canary, canary_weight)


def test_a_rollout_broken_after_a_stage_keeps_that_stage_when_the_rollback_fails(
    deploy, service, ledger
):
    """The router goes away between stage 1 (judged, promoted) and stage 2: the rollout breaks,
    the rollback cannot restore traffic; the outcome (its JSON, the thread's ending) still
    lists stage 1, as the tracking row does."""
    service.router = DiesBeforeSecondStage()
    service.run_stable("v1")
    outcome = deploy("v2")
    assert outcome.status == "failed"
    assert outcome.message.startswith("ROLLBACK FAILED"), outcome.message
    assert [(s.index, s.weight, s.verdict.value) for s in outcome.stages] == [(0, 5, "promote")]
    assert [s["weight"] for s in outcome.to_dict()["stages"]] == [5]
    assert [s["weight"] for s in recorded(ledger, outcome)["stages"]] == [5]


def test_a_failed_rollback_is_loud_and_the_next_deploy_repairs_it(deploy, service, ledger):
    router = RefusesRollback()
    service.router = router
    service.run_stable("v1")
    service.behave("v3", error_rate=0.2)
    outcome = deploy("v3")
    assert outcome.status == "failed"
    assert outcome.message.startswith("ROLLBACK FAILED")
    assert outcome.rollback is not None
    assert not outcome.rollback.verified
    assert "put all traffic on v1 by hand" in (outcome.rollback.error or "")
    # The router still serves: stopping the canary would turn its share into errors.
    assert running(service) == {"v1", "v3"}
    assert any("ROLLBACK FAILED" in m for m in service.notifier.messages)
    row = recorded(ledger, outcome)
    assert row["status"] == "failed"
    assert row["canary_weight"] == 5
    assert "locked" in row["incidents"][0]["evidence"]["error"]

    router.refusing = False  # the router is fixed; the next deploy settles traffic first
    repaired = deploy("v2")
    assert repaired.status == "succeeded", repaired.message
    assert repaired.reconciled == [
        "interrupted deploy of v3 reconciled: all traffic on v1, stopped v3"
    ]
    assert serving(service, "v2")
    assert running(service) == {"v2"}
    assert recorded(ledger, outcome)["canary_weight"] == 0


def test_a_router_gone_mid_rollout_stops_the_canary_and_says_what_to_do(deploy, service, ledger):
    service.router = DiesAfterFirstSplit()
    service.run_stable("v1")
    service.behave("v3", error_rate=0.2)
    outcome = deploy("v3")
    assert outcome.status == "failed"
    assert outcome.rollback is not None
    error = outcome.rollback.error or ""
    assert "does not answer" in error
    assert "v3 was stopped" in error
    assert "the next deploy reconciles first" in error
    assert running(service) == {"v1"}
    assert recorded(ledger, outcome)["canary_weight"] == 5


def test_metrics_dying_mid_stage_roll_back_and_the_restore_is_verified_without_them(
    deploy, service, ledger
):
    service.run_stable("v1")
    service.metrics.down_after_samples = 1
    # The stage is long enough for the second look (5 ms after the first) to meet the dead backend
    # on a loaded machine: with the default 10 ms it could end first, and on_inconclusive decide.
    slow_stage = {"kind": "canary", "steps": [5, 25, 50, 100], "observe": "2s"}
    outcome = deploy("v2", spec=make_spec(deploy.tmp_path, strategy=slow_stage))
    assert outcome.status == "rolled_back", outcome.message
    assert outcome.rollback is not None
    assert outcome.rollback.trigger.metric == "metrics"
    assert outcome.rollback.verified
    assert outcome.rollback.verification is not None
    [metrics_check] = [c for c in outcome.rollback.verification.checks if c.metric == "metrics"]
    assert not metrics_check.critical
    assert "metrics unavailable" in metrics_check.detail
    assert serving(service, "v1")
    assert recorded(ledger, outcome)["canary_weight"] == 0


def test_a_bad_first_release_has_nothing_to_roll_back_to(deploy, service, ledger):
    service.behave("v1", healthy=False)
    # A first release goes direct; a direct spec keeps its observe short (the default is 60 s).
    direct = make_spec(deploy.tmp_path, strategy={"kind": "direct", "observe": "10ms"})
    outcome = deploy("v1", spec=direct)
    assert outcome.status == "failed"
    assert outcome.strategy == "direct"
    assert outcome.message.endswith("no previous version to roll back to")
    assert outcome.rollback is None


def test_redeploying_the_live_version_changes_nothing(deploy, service, ledger):
    service.run_stable("v1")
    outcome = deploy("v1")
    assert outcome.status == "succeeded"
    assert "already serves all the traffic" in outcome.message
    assert service.router.changes == []
    assert service.metrics.queries == []


def test_a_dry_run_checks_and_plans_but_starts_nothing(deploy, service, ledger):
    service.run_stable("v1")
    ten_minutes = {"kind": "canary", "steps": [5, 25, 50, 100], "observe": "10m"}
    outcome = deploy("v2", make_spec(deploy.tmp_path, strategy=ten_minutes), dry_run=True)
    assert outcome.status == "succeeded"
    assert outcome.message.startswith("dry run: checks passed, plan canary 5%/25%/50%/100%")
    # What the service's traffic (the fake's 600 requests/s) buys each stage, measured now.
    assert "at today's traffic:" in outcome.message
    assert "- stage 1 at 5%: 30 canary requests/s; ~64 requests to show it below 5% at 80%" in (
        outcome.message
    )
    assert "verdict probably at 10 min" in outcome.message
    assert running(service) == {"v1"}
    assert service.router.changes == []
    assert recorded(ledger, outcome)["dry_run"] is True


def test_a_dry_run_tries_the_spec_on_what_runs_and_fails_naming_what_does_not_answer(
    deploy, service, ledger
):
    service.run_stable("v1")
    service.metrics.down = True
    outcome = deploy("v2", dry_run=True)
    assert outcome.status == "aborted"
    assert outcome.message.startswith("dry run: 1 live check(s) failed: metrics: ")
    assert outcome.message.endswith("; nothing was started")
    assert running(service) == {"v1"}
    assert service.router.changes == []


def test_metrics_down_stops_the_deploy_before_any_traffic(deploy, service, ledger):
    service.run_stable("v1")
    service.metrics.down = True
    outcome = deploy("v2")
    assert outcome.status == "aborted"
    assert "cannot measure the P95 baseline" in outcome.message
    assert running(service) == {"v1"}
    assert service.router.changes == []


def test_failing_notifications_never_stop_a_rollback(deploy, service, ledger):
    service.run_stable("v1")
    service.notifier.failing = True
    service.behave("v3", error_rate=0.2)
    outcome = deploy("v3")
    assert outcome.status == "rolled_back"
    assert serving(service, "v1")
    assert [n.ok for n in outcome.notifications] == [False]


def test_a_canary_that_dies_mid_stage_rolls_back_at_once(deploy, service, ledger):
    service.run_stable("v1")
    sample = service.metrics.sample

    def crash_v5_when_measured(version: str, window_seconds: float):
        service.target.running.pop("v5", None)  # died right after its health check
        return sample(version, window_seconds)

    service.metrics.sample = crash_v5_when_measured  # type: ignore[method-assign]
    outcome = deploy("v5")
    assert outcome.status == "rolled_back", outcome.message
    assert outcome.rollback is not None
    assert outcome.rollback.trigger.metric == "canary_down"
    assert len(outcome.stages) == 1
    assert serving(service, "v1")


def test_a_canary_whose_router_slot_goes_down_rolls_back_at_once(deploy, service, ledger):
    service.run_stable("v1")
    sample = service.metrics.sample

    def health_check_fails_when_measured(version: str, window_seconds: float):
        # What HAProxy reports once its health check takes the canary's server out.
        service.router.canary, service.router.canary_weight = None, 0
        return sample(version, window_seconds)

    service.metrics.sample = health_check_fails_when_measured  # type: ignore[method-assign]
    outcome = deploy("v5")
    assert outcome.status == "rolled_back", outcome.message
    assert outcome.rollback is not None
    assert outcome.rollback.trigger.metric == "canary_down"
    assert "health check" in outcome.rollback.trigger.reason
    assert len(outcome.stages) == 1
    assert serving(service, "v1")
    assert running(service) == {"v1"}


def test_a_deploy_holding_its_lease_blocks_the_next_and_a_lapsed_one_is_reconciled(
    deploy, service, ledger, monkeypatch
):
    from deployflow.release import ReleaseOutcome
    from tasks.reconcile import DeployInProgress

    monkeypatch.setenv("DEPLOYFLOW_LEASE_SECONDS", "30")
    service.run_stable("v1")
    orphan = service.target.start("v9")
    service.router.set_split(service.target.running["v1"], orphan, 25)
    environment = deploy.environment
    other = ledger.start(ReleaseOutcome(service="shop", environment=environment, version="v9"))
    ledger.traffic_moving(other, stage=1, weight=25)

    with pytest.raises(DeployInProgress, match=r"v9 .* is still running"):
        deploy("v2")
    assert running(service) == {"v1", "v9"}

    with ledger._sessions() as s, s.begin():  # its process died 31 s ago
        stale = datetime.now(UTC) - timedelta(seconds=31)
        repository.update_deployment(s, other, heartbeat_at=stale)
    outcome = deploy("v2")
    assert outcome.status == "succeeded", outcome.message
    assert outcome.reconciled == [
        "interrupted deploy of v9 reconciled: all traffic on v1, stopped v9"
    ]
    assert running(service) == {"v2"}
    assert (
        recorded(ledger, ReleaseOutcome("shop", environment, "v9", deployment_id=other))["status"]
        == "failed"
    )


@flow(name="deploy-left-running")
def _left_running() -> None:
    """Stands for a deploy's flow run whose process ended without Prefect learning it."""


def _running_flow_run() -> str:
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        return str(client.create_flow_run(_left_running, state=Running()).id)


def _flow_run(flow_run_id: str):
    from uuid import UUID

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id))


def _dead_deploy(ledger: Ledger, environment: str, version: str, verdicts: list[str]) -> int:
    """The row of a deploy of ``version`` that recorded its stages, wrote its promotion, then
    lost its tracking database (nothing more written) and whose process ended 31 s ago; its
    flow run is still Running in Prefect."""
    from deployflow.analysis import Verdict
    from deployflow.rollout import StageResult

    row = ledger.start(
        ReleaseOutcome(
            service="shop",
            environment=environment,
            version=version,
            previous_version="v1",
            flow_run_id=_running_flow_run(),
        )
    )
    now = datetime.now(UTC)
    for index, (weight, verdict) in enumerate(zip((5, 25, 100), verdicts, strict=False)):
        ledger.traffic_moving(row, stage=index, weight=weight)
        ledger.stage_observed(row, StageResult(index, weight, Verdict(verdict), [], None, now, now))
    ledger.traffic_moving(row, stage=None, weight=100)
    with ledger._sessions() as s, s.begin():
        repository.update_deployment(s, row, heartbeat_at=now - timedelta(seconds=31))
    return row


def test_a_deploy_promoted_before_it_lost_its_database_is_recorded_as_succeeded(
    deploy, service, ledger
):
    service.run_stable("v1")
    orphan = service.target.start("v9")
    dead = _dead_deploy(ledger, deploy.environment, "v9", ["promote", "promote", "promote"])
    service.router.promote(orphan)  # the router was told after the promotion was written

    outcome = deploy("v10")
    assert outcome.status == "succeeded", outcome.message
    assert len(outcome.reconciled) == 1
    assert outcome.reconciled[0].startswith("deploy of v9 recorded as succeeded: v9 passed")
    row = recorded(ledger, ReleaseOutcome("shop", deploy.environment, "v9", deployment_id=dead))
    assert row["status"] == "succeeded"
    assert "Recorded as succeeded by the reconciler of the next deploy" in row["summary"]
    assert row["canary_weight"] == 0
    assert serving(service, "v10")
    # v9's run died before it stopped v1: this deploy's retire step did (v10's success, v9).
    assert running(service) == {"v10"}
    # Its run, left Running in Prefect, ends as the row does: Completed, tagged, said how.
    run = _flow_run(row["flow_run_id"])
    assert run.state is not None
    assert run.state.name == "Completed"
    assert run.state.message.startswith("succeeded (set afterwards by the reconciler of the next")
    assert "outcome:succeeded" in run.tags


def test_runs_left_running_in_prefect_get_the_final_state_their_outcome_recorded(
    deploy, service, ledger
):
    """Deploys that lost their Prefect API finished, recorded their outcome and exited: the
    next deploy sets their runs' final state from the tracking database, except a run whose
    outcome is too recent (its own process may still be setting it)."""
    service.run_stable("v1")
    environment = deploy.environment
    runs = {}
    for version, status, ago in (("v7", "rolled_back", 300), ("v8", "succeeded", 150)):
        runs[version] = _running_flow_run()
        row = ledger.start(ReleaseOutcome("shop", environment, version, flow_run_id=runs[version]))
        ledger.close(row, status, f"{version} {status} as recorded")
        with ledger._sessions() as s, s.begin():
            finished = datetime.now(UTC) - timedelta(seconds=ago)
            repository.update_deployment(s, row, finished_at=finished)
    runs["recent"] = _running_flow_run()
    recent = ledger.start(ReleaseOutcome("shop", environment, "v6", flow_run_id=runs["recent"]))
    ledger.close(recent, "succeeded", "just now")

    assert deploy("v2").status == "succeeded"
    rolled_back, succeeded = _flow_run(runs["v7"]), _flow_run(runs["v8"])
    assert rolled_back.state is not None
    assert succeeded.state is not None
    assert rolled_back.state.name == "Failed"
    assert rolled_back.state.message == (
        f"rolled_back (set afterwards by the next deploy of shop to {environment}, from the "
        "outcome in the tracking database: Prefect never learnt this run's final state): v7 "
        "rolled_back as recorded"
    )
    assert "outcome:rolled-back" in rolled_back.tags
    assert succeeded.state.name == "Completed"
    assert "outcome:succeeded" in succeeded.tags
    left = _flow_run(runs["recent"])
    assert left.state is not None
    assert left.state.name == "Running"


def test_a_dead_deploy_with_a_stage_not_passed_stays_failed_though_its_version_serves(
    deploy, service, ledger
):
    service.run_stable("v1")
    orphan = service.target.start("v9")
    dead = _dead_deploy(ledger, deploy.environment, "v9", ["promote", "promote", "rollback"])
    service.router.promote(orphan)

    outcome = deploy("v10")
    assert outcome.status == "succeeded", outcome.message
    row = recorded(ledger, ReleaseOutcome("shop", deploy.environment, "v9", deployment_id=dead))
    assert row["status"] == "failed"
    assert row["summary"].startswith("interrupted; v9 had been promoted before the interruption")


def test_an_interrupted_run_puts_traffic_back_before_it_exits(deploy, service, ledger):
    """Ctrl-C in the middle of a stage. (SIGTERM takes the same path as Prefect's
    TerminationSignal, but Prefect then re-sends SIGTERM to its process, so it is tested end to
    end in tests/e2e, where that process is not pytest.)"""
    service.run_stable("v1")

    def ctrl_c(version: str, window_seconds: float):
        raise KeyboardInterrupt

    service.metrics.sample = ctrl_c  # type: ignore[method-assign]
    before = len(flows.deploy.OUTCOMES_REACHED)
    with pytest.raises(KeyboardInterrupt):
        deploy("v6")
    assert serving(service, "v1")
    assert running(service) == {"v1"}
    # What the CLI reports (deploy --json): traffic restored, v1 serving.
    [reached] = flows.deploy.OUTCOMES_REACHED[before:]
    assert reached["interruption"] == {
        "signal": "SIGINT",
        "traffic_restored": True,
        "serving": "v1",
    }
    with ledger._sessions() as s:
        [row] = repository.history(s, service="shop", environment=deploy.environment, limit=1)
        assert row.status == "failed"
        assert row.canary_weight == 0
        assert row.summary == "interrupted (SIGINT): all traffic back on v1, stopped v6"


def test_a_run_interrupted_before_it_starts_anything_says_no_traffic_moved(
    deploy, service, ledger, monkeypatch
):
    """Ctrl-C during step 4 (before the new version is started): nothing to put back; the row
    is closed saying so, and the outcome the CLI reports says traffic never left v1."""
    service.run_stable("v1")

    def ctrl_c(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.deploy, "announce", ctrl_c)
    before = len(flows.deploy.OUTCOMES_REACHED)
    with pytest.raises(KeyboardInterrupt):
        deploy("v6")
    assert service.router.changes == []
    assert running(service) == {"v1"}
    [reached] = flows.deploy.OUTCOMES_REACHED[before:]
    assert reached["interruption"] == {
        "signal": "SIGINT",
        "traffic_restored": True,
        "serving": "v1",
    }
    assert reached["message"] == "interrupted (SIGINT) before v6 was started: no traffic moved"
    with ledger._sessions() as s:
        [row] = repository.history(s, service="shop", environment=deploy.environment, limit=1)
        assert (row.status, row.summary) == ("failed", reached["message"])


def test_probe_traffic_reaches_the_canary_in_each_stage_and_is_counted_apart(
    deploy, service, ledger
):
    service.run_stable("v1")
    probed = make_spec(
        deploy.tmp_path,
        analysis={"interval": "20ms", "window": "1s", "baseline_window": "1s",
                  "min_requests": 10, "probe_rate": 200},
        strategy={"kind": "canary", "steps": [50, 100], "observe": "200ms"},
    )  # fmt: skip
    outcome = deploy("v2", probed)
    assert outcome.status == "succeeded", outcome.message
    for stage in outcome.stages:
        # Sent straight to v2's own address (the smoke requests' paths) while each stage ran.
        assert stage.probe_sent > 0, stage
        assert stage.probe_failed == 0
        assert stage.to_dict()["probe"] == {"sent": stage.probe_sent, "failed": 0}


def restart_router_from_its_configuration(service: FakeService) -> None:
    """What HAProxy restarted from its configuration shows: both slots point nowhere."""
    service.router.stable, service.router.canary, service.router.canary_weight = None, None, 0
    service.router.changes.clear()


@pytest.mark.parametrize("still_running", [True, False], ids=["running", "stopped"])
def test_a_router_that_lost_the_live_version_gets_it_back_before_a_bad_release(
    deploy, service, ledger, still_running
):
    """The tracking database, not the router, says what is live: v2 released, the router
    restarted, a bad v3 is judged against v2 (put back, started again if it was gone) and
    rolled back to it, never released as a first release."""
    service.run_stable("v1")
    assert deploy("v2").status == "succeeded"
    restart_router_from_its_configuration(service)
    if not still_running:
        service.target.stop("v2")
    service.behave("v3", error_rate=0.2)

    outcome = deploy("v3")

    assert outcome.status == "rolled_back", outcome.message
    assert outcome.previous_version == "v2"
    assert outcome.strategy == "canary"
    assert "tracking database says v2 is live" in outcome.reconciled[0]
    assert ("started it" in outcome.reconciled[0]) is not still_running
    # The first router write put v2 back with all the traffic, before any canary weight.
    assert service.router.changes[0].canary_weight == 0
    assert service.router.changes[0].stable == service.target.running["v2"].address
    assert serving(service, "v2")
    assert running(service) == {"v2"}


def test_a_live_version_that_cannot_be_put_back_refuses_the_deploy(deploy, service, ledger):
    service.run_stable("v1")
    assert deploy("v2").status == "succeeded"
    restart_router_from_its_configuration(service)
    service.target.stop("v2")
    service.target.fail_start.add("v2")

    with pytest.raises(LiveVersionLost, match="Start v2 and point the router's stable slot"):
        deploy("v3")
    assert service.router.changes == []
    assert running(service) == set()
