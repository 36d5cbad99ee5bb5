"""Blue-green through the deploy flow with in-memory backends (fixtures of
test_release_branches): green judged in isolation, one switch, a switch back in one step; and the
release's feature flags after any strategy's switch or promotion, with the kill switch."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

import flows.deploy
from deployflow.analysis import MetricSample
from deployflow.backends import Backends
from deployflow.fakes.backends import FakeService
from deployflow.fakes.grafana_api import FakeGrafanaAPI
from deployflow.flags.flagd_file import FlagdFileProvider
from deployflow.notify.report import deploy_summary
from deployflow.providers.base import RouterState
from deployflow.providers.grafana import GrafanaAnnotator
from flows.deploy import ReleaseRequest
from tests.integration.flows import test_release_branches as branches
from tests.integration.flows.helpers import make_spec, recorded, running, serving

pytestmark = pytest.mark.integration

# The deploy harness of the branch tests: the ledger, the fake service, ``deploy``.
deploy, ledger, service = branches.deploy, branches.ledger, branches.service
no_retry_pauses = branches.no_retry_pauses

BLUE_GREEN = {"kind": "blue-green", "observe": "10ms", "keep_previous": "10ms", "probe_requests": 3}


def green_ever_had_traffic(service: FakeService, address: str) -> bool:
    return any(c.canary == address and c.canary_weight > 0 for c in service.router.changes) or any(
        c.stable == address for c in service.router.changes
    )


def test_blue_green_switches_once_keeps_blue_then_promotes(
    deploy, service, ledger, tmp_path, monkeypatch
):
    def not_measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("the risk was measured although the spec fixes the kind")

    monkeypatch.setattr(flows.deploy, "assess_risk_task", not_measured)
    blue = service.run_stable("v1")
    outcome = deploy("v2", make_spec(tmp_path, strategy=BLUE_GREEN))
    assert outcome.status == "succeeded", outcome.message
    assert outcome.strategy == "blue-green"
    assert [(s.index, s.weight) for s in outcome.stages] == [(0, 0), (1, 100)]
    green = service.target.running["v2"]
    # One switch to 100% green with blue ready behind it, then green takes the stable slot.
    assert service.router.changes[0] == RouterState(blue.address, green.address, 100)
    assert service.router.changes[-1] == RouterState(green.address, None, 0)
    assert len(service.router.changes) == 2
    assert outcome.switch_seconds is not None
    assert outcome.to_dict()["switch_seconds"] == outcome.switch_seconds
    assert serving(service, "v2")
    assert running(service) == {"v2"}
    assert [s["weight"] for s in recorded(ledger, outcome)["stages"]] == [0, 100]
    # The spec fixes the kind: the risk is not measured (no git diff, no history query).
    rationale = outcome.to_dict()["strategy_rationale"]
    assert rationale == {
        "explanation": "blue-green from the spec",
        "score": None,
        "level": None,
        "factors": [],
    }
    assert "Risk factors:" not in service.notifier.messages[0]


def test_green_failing_in_isolation_never_gets_user_traffic(deploy, service, ledger, tmp_path):
    service.run_stable("v1")
    service.behave("v3", error_rate=0.2)
    outcome = deploy("v3", make_spec(tmp_path, strategy=BLUE_GREEN))
    assert outcome.status == "rolled_back", outcome.message
    assert outcome.rollback is not None
    assert outcome.rollback.trigger.metric == "error_rate"
    assert (outcome.rollback.trigger.stage, outcome.rollback.trigger.weight) == (0, 0)
    assert [s.weight for s in outcome.stages] == [0]
    assert "v3" in service.metrics.queries  # judged under probe traffic
    assert outcome.switch_seconds is None
    green_address = f"127.0.0.1:{service.target._next_port}"
    assert not green_ever_had_traffic(service, green_address)
    assert serving(service, "v1")
    assert running(service) == {"v1"}


def test_a_green_that_fails_after_the_switch_is_switched_back_in_one_step(
    deploy, service, ledger, tmp_path
):
    blue = service.run_stable("v1")
    sample = service.metrics.sample

    def bad_under_user_traffic(version: str, window_seconds: float) -> MetricSample:
        if version == "v4" and service.router.canary_weight == 100:
            return MetricSample(0.3, 0.05, 600.0)
        return sample(version, window_seconds)

    service.metrics.sample = bad_under_user_traffic  # type: ignore[method-assign]
    outcome = deploy("v4", make_spec(tmp_path, strategy=BLUE_GREEN))
    assert outcome.status == "rolled_back", outcome.message
    assert outcome.switch_seconds is not None
    assert outcome.rollback is not None
    assert outcome.rollback.verified
    assert "post-deploy verification failed" in outcome.rollback.trigger.reason
    green_address = f"127.0.0.1:{service.target._next_port}"
    assert service.router.changes == [
        RouterState(blue.address, green_address, 100),  # the switch
        RouterState(blue.address, None, 0),  # the switch back, one call
    ]
    assert serving(service, "v1")
    assert running(service) == {"v1"}
    assert recorded(ledger, outcome)["canary_weight"] == 0


def with_flags(
    service: FakeService, ledger, flags: FlagdFileProvider, annotators: tuple = ()
) -> Backends:
    return Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(service.notifier,),
        ledger=ledger,
        http_transport=service.transport,
        flags=flags,
        annotators=annotators,
    )


def flags_section(path, **extra: object) -> dict[str, object]:
    return {
        "provider": {"kind": "flagd-file", "path": str(path)},
        "release": ["new-checkout"],
        "observe": "10ms",
        **extra,
    }


def test_a_flag_whose_new_path_fails_is_killed_and_the_version_stays(
    prefect_server, service, ledger, tmp_path
):
    flags = FlagdFileProvider(tmp_path / "flags.json")
    grafana = FakeGrafanaAPI(token="glsa-bg").start()
    annotator = GrafanaAnnotator(SecretStr("glsa-bg"), grafana.base_url, "shop")
    backends = with_flags(service, ledger, flags, annotators=(annotator,))
    service.run_stable("v1")
    sample = service.metrics.sample

    def new_checkout_path_fails(version: str, window_seconds: float) -> MetricSample:
        if version == "v2" and (flags.rollout("new-checkout") or 0) > 0:
            return MetricSample(0.3, 0.05, 600.0)
        return sample(version, window_seconds)

    service.metrics.sample = new_checkout_path_fails  # type: ignore[method-assign]
    spec = make_spec(tmp_path, strategy=BLUE_GREEN, flags=flags_section(flags.path))
    try:
        outcome = branches.run_release(spec, backends, ReleaseRequest("v2", "flags-env"))
        annotations = grafana.annotations
    finally:
        grafana.stop()
    assert outcome.status == "succeeded", outcome.message
    # Each blue-green stage and flag step is told as it ends (a dashboard point each), and the
    # kill switch between them.
    region, *points = [a["text"] for a in annotations]
    assert region == "deploy shop v2 to flags-env (blue-green)"
    assert [p.split(" · ")[0][:40] for p in points] == [
        "Stage 1", "Stage 2", ":no_entry: feature flag new-checkout tur", "Stage 3", "Stage 4",
    ], points  # fmt: skip
    # Each stage says what it observed (none of them is a canary at a weight).
    assert [p.split(" · ")[1] for p in points if p.startswith("Stage")] == [
        "v2 in isolation",
        "flag new-checkout on for 5% of users",
        "v2 with flag new-checkout off",
        "100% v2, v1 kept warm",
    ], points
    assert flags.rollout("new-checkout") == 0  # killed, no redeploy
    assert [(c["percent"], c["reason"].split(":")[0]) for c in outcome.flag_changes] == [
        (5, "step"),
        (0, "kill switch at 5%"),
    ]
    assert serving(service, "v2")  # the version itself stayed
    assert outcome.message.endswith("feature flag(s) new-checkout turned off by the kill switch")
    assert any("new-checkout turned off" in m for m in service.notifier.messages)
    row = recorded(ledger, outcome)
    assert [(f["flag"], f["percent"]) for f in row["flag_changes"]] == [
        ("new-checkout", 5),
        ("new-checkout", 0),
    ]
    assert outcome.deployment_id is not None
    summary = deploy_summary(ledger.record(outcome.deployment_id))
    assert "| new-checkout | 5% | step" in summary
    assert "| new-checkout | 0% | kill switch at 5%" in summary


def test_a_canary_release_rolls_its_flags_out_after_promotion_and_kills_a_bad_one(
    prefect_server, service, ledger, tmp_path
):
    flags = FlagdFileProvider(tmp_path / "flags.json")
    service.run_stable("v1")
    sample = service.metrics.sample
    seen_at_flag_steps: list[RouterState] = []

    def new_checkout_path_fails(version: str, window_seconds: float) -> MetricSample:
        if version == "v2" and (flags.rollout("new-checkout") or 0) > 0:
            seen_at_flag_steps.append(service.router.state())
            return MetricSample(0.3, 0.05, 600.0)
        return sample(version, window_seconds)

    service.metrics.sample = new_checkout_path_fails  # type: ignore[method-assign]
    spec = make_spec(tmp_path, flags=flags_section(flags.path))  # canary 5/25/50/100
    outcome = branches.run_release(
        spec, with_flags(service, ledger, flags), ReleaseRequest("v2", "canary-flags")
    )
    assert outcome.status == "succeeded", outcome.message
    assert outcome.strategy == "canary"
    # The four stages, then the flag's first step (killed) and v2 observed with the flag off.
    assert [(s.weight, s.verdict.value) for s in outcome.stages] == [
        (5, "promote"), (25, "promote"), (50, "promote"), (100, "promote"),
        (100, "rollback"), (100, "promote"),
    ]  # fmt: skip
    v2 = service.target.running["v2"].address
    # The flag moved only after the promotion: v2 alone in the stable slot.
    assert seen_at_flag_steps
    assert all(s == RouterState(v2, None, 0) for s in seen_at_flag_steps)
    assert [(c["percent"], c["reason"].split(":")[0]) for c in outcome.flag_changes] == [
        (5, "step"),
        (0, "kill switch at 5%"),
    ]
    assert flags.rollout("new-checkout") == 0
    assert serving(service, "v2")
    assert running(service) == {"v2"}
    assert outcome.message.endswith("feature flag(s) new-checkout turned off by the kill switch")
    row = recorded(ledger, outcome)
    assert [(f["flag"], f["percent"]) for f in row["flag_changes"]] == [
        ("new-checkout", 5),
        ("new-checkout", 0),
    ]


def test_a_direct_release_still_bad_with_its_flag_killed_is_rolled_back(
    prefect_server, service, ledger, tmp_path
):
    flags = FlagdFileProvider(tmp_path / "flags.json")
    service.run_stable("v1")
    sample = service.metrics.sample

    def bad_once_its_flag_was_touched(version: str, window_seconds: float) -> MetricSample:
        if version == "v2" and flags.path.exists():
            return MetricSample(0.3, 0.05, 600.0)
        return sample(version, window_seconds)

    service.metrics.sample = bad_once_its_flag_was_touched  # type: ignore[method-assign]
    spec = make_spec(
        tmp_path,
        strategy={"kind": "direct", "observe": "10ms"},
        flags=flags_section(flags.path, steps=[50, 100]),
    )
    outcome = branches.run_release(
        spec, with_flags(service, ledger, flags), ReleaseRequest("v2", "direct-flags")
    )
    assert outcome.status == "rolled_back", outcome.message
    assert [(s.weight, s.verdict.value) for s in outcome.stages] == [
        (100, "promote"), (100, "rollback"), (100, "rollback"),
    ]  # fmt: skip
    # Killed first, then (still bad without it) traffic back on v1.
    assert [c["percent"] for c in outcome.flag_changes] == [50, 0]
    assert flags.rollout("new-checkout") == 0
    assert outcome.rollback is not None
    assert outcome.rollback.verified
    assert serving(service, "v1")
    assert running(service) == {"v1"}


def test_a_direct_release_turns_its_flags_fully_on(prefect_server, service, ledger, tmp_path):
    flags = FlagdFileProvider(tmp_path / "flags.json")
    service.run_stable("v1")
    spec = make_spec(
        tmp_path,
        strategy={"kind": "direct", "observe": "10ms"},
        flags=flags_section(flags.path, steps=[50, 100]),
    )
    outcome = branches.run_release(
        spec, with_flags(service, ledger, flags), ReleaseRequest("v2", "direct-flags-on")
    )
    assert outcome.status == "succeeded", outcome.message
    assert [s.weight for s in outcome.stages] == [100, 100, 100]
    assert [c["percent"] for c in outcome.flag_changes] == [50, 100]
    assert flags.rollout("new-checkout") == 100
    assert serving(service, "v2")
    assert running(service) == {"v2"}


def test_a_switch_that_breaks_keeps_the_isolation_stage_in_the_outcome(
    deploy, service, ledger, tmp_path
):
    """The router goes away at the switch, after green was judged in isolation: the release
    breaks and the switch back cannot be made; the outcome still lists the isolation stage."""
    service.run_stable("v1")
    set_split = service.router.set_split

    def gone_at_the_switch(stable, canary, canary_weight):
        if canary_weight == 100:
            service.router.down = True
        set_split(stable, canary, canary_weight)

    service.router.set_split = gone_at_the_switch  # type: ignore[method-assign]
    outcome = deploy("v2", make_spec(tmp_path, strategy=BLUE_GREEN))
    assert outcome.status == "failed", outcome.message
    assert outcome.message.startswith("ROLLBACK FAILED"), outcome.message
    assert [(s.index, s.weight) for s in outcome.stages] == [(0, 0)]
    assert [s["weight"] for s in outcome.to_dict()["stages"]] == [0]
