"""The seam: spec sections by kind, the registry, connect, and what a run's bundle reveals."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.encoders import jsonable_encoder
from pydantic import SecretStr

from deployflow.backends import Backends, connect
from deployflow.fakes.backends import FakeService, InMemoryTarget, RecordingNotifier
from deployflow.notify.slack import SlackNotifier
from deployflow.providers import registry
from deployflow.providers.base import BackendConfigError, BuildContext, Target, close_backend
from deployflow.providers.haproxy import HAProxyRouter
from deployflow.providers.local_process import LocalProcessTarget
from deployflow.providers.prometheus import PrometheusMetrics
from deployflow.spec import SpecError, parse_spec
from deployflow.tracking.ledger import Ledger
from tests.samples import spec_data

TOKEN = "xoxb-never-shown-1234"


def test_an_unknown_kind_names_the_known_ones() -> None:
    data = spec_data(router={"kind": "envoy", "admin": "http://127.0.0.1:9901"})
    data["notifications"] = {"notifiers": [{"kind": "teams"}]}
    with pytest.raises(SpecError) as error:
        parse_spec(data)
    assert (
        "router.kind",
        "unknown router kind 'envoy'; known kinds: 'haproxy', 'nginx', 'command'",
    ) in (error.value.problems)
    assert (
        "notifications.notifiers.0.kind",
        "unknown notifier kind 'teams'; known kinds: 'slack'",
    ) in error.value.problems


def test_each_registered_kind_builds_its_backend(tmp_path: Path) -> None:
    spec = parse_spec(spec_data())
    ctx = BuildContext(env={})
    assert isinstance(registry.build("target", spec.target, ctx), LocalProcessTarget)
    router = registry.build("router", spec.router, ctx)
    assert isinstance(router, HAProxyRouter)
    assert router.frontend_url == "http://lb.test"
    assert isinstance(registry.build("metrics", spec.metrics, ctx), PrometheusMetrics)
    assert [b.kind for b in registry.BACKENDS] == [
        "local-process",
        "command",
        "github-actions",
        "haproxy",
        "nginx",
        "command",
        "prometheus",
        "access-log",
        "slack",
        "flagd-file",
        "pagerduty",
        "static",
        "grafana",
        "file",
        "command",
        "target",
        "alertmanager",
        "http",
        "prometheus",
    ]


def test_a_section_registered_for_another_role_is_refused() -> None:
    spec = parse_spec(spec_data())
    with pytest.raises(TypeError, match="no router backend"):
        registry.build("router", spec.target, BuildContext(env={}))


def test_slack_without_a_block_needs_the_fallback_token() -> None:
    spec = parse_spec(spec_data(notifications={"notifiers": [{"kind": "slack", "channel": "#d"}]}))
    (section,) = spec.notifications.notifiers
    with pytest.raises(BackendConfigError, match="DEPLOYFLOW_SLACK_TOKEN"):
        registry.build("notifier", section, BuildContext(env={}))
    notifier = registry.build(
        "notifier", section, BuildContext(env={"DEPLOYFLOW_SLACK_TOKEN": TOKEN})
    )
    assert isinstance(notifier, SlackNotifier)


def test_a_named_block_without_a_prefect_api_is_a_config_error() -> None:
    spec = parse_spec(spec_data(notifications={"notifiers": [{"kind": "slack", "block": "ops"}]}))
    with pytest.raises(BackendConfigError, match="block 'ops' cannot be loaded here"):
        registry.build("notifier", spec.notifications.notifiers[0], BuildContext(env={}))


def test_slack_needs_a_block_or_a_channel() -> None:
    with pytest.raises(SpecError, match="name a Slack block"):
        parse_spec(spec_data(notifications={"notifiers": [{"kind": "slack"}]}))


def test_relative_backend_paths_resolve_against_the_spec_folder(tmp_path: Path) -> None:
    from deployflow.spec import resolve_paths

    spec = resolve_paths(parse_spec(spec_data()), tmp_path)
    assert spec.target.state_dir == tmp_path / "state"  # type: ignore[attr-defined]
    assert spec.router.admin_socket == Path("/run/h.sock")  # type: ignore[attr-defined]


def test_connect_builds_every_backend_once_from_the_spec(tmp_path: Path) -> None:
    spec = parse_spec(
        spec_data(notifications={"notifiers": [{"kind": "slack", "channel": "#deploys"}]})
    )
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    backends = connect(spec, ledger, BuildContext(env={"DEPLOYFLOW_SLACK_TOKEN": TOKEN}))
    assert isinstance(backends.router, HAProxyRouter)
    assert [n.describe() for n in backends.notifiers] == ["slack #deploys"]


def test_the_bundle_a_subflow_receives_shows_descriptions_never_secrets(tmp_path: Path) -> None:
    service = FakeService()
    notifier = SlackNotifier(SecretStr(TOKEN), "#deploys", base_url="http://127.0.0.1:9/api/")
    backends = Backends(
        target=service.target,
        router=service.router,
        metrics=service.metrics,
        notifiers=(notifier,),
        ledger=Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}"),
    )
    # What Prefect stores for a subflow's parameters (Flow.serialize_parameters).
    shown = jsonable_encoder(backends)
    assert shown["notifiers"] == ["slack #deploys"]
    assert shown["router"] == "in-memory router"
    assert TOKEN not in repr(shown)
    assert TOKEN not in repr(backends.model_dump())


def test_haproxy_names_are_single_words_because_they_go_into_runtime_api_commands() -> None:
    router = {**spec_data()["router"], "backend": "app weight 0"}
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(router=router))
    assert [path for path, _ in error.value.problems] == ["router.backend"]


class ClosingTarget(InMemoryTarget):
    """A target holding something until ``close()``; ``failing`` makes closing raise."""

    def __init__(self, failing: bool = False) -> None:
        super().__init__()
        self.closed = 0
        self.failing = failing

    def close(self) -> None:
        self.closed += 1
        if self.failing:
            raise RuntimeError("client already gone")


class ClosingNotifier(RecordingNotifier):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_closing_the_bundle_closes_what_has_close_and_leaves_the_ledger_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeService()
    target, notifier = ClosingTarget(failing=True), ClosingNotifier()
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    backends = Backends(
        target=target,
        router=service.router,  # no close(): nothing to release, not an error
        metrics=service.metrics,
        notifiers=(notifier,),
        ledger=ledger,  # its close(id, status, summary) closes a deployment row, not the ledger
    )
    backends.close()
    # The target's failure is logged and the notifier after it is still closed.
    assert (target.closed, notifier.closed) == (1, 1)
    assert "closing ClosingTarget failed" in caplog.text
    assert ledger.deployed("shop", "sandbox") is None  # still usable


def test_close_is_optional_in_the_target_contract() -> None:
    plain, closing = InMemoryTarget(), ClosingTarget()
    assert isinstance(plain, Target)
    assert isinstance(closing, Target)
    close_backend(plain)  # the default: nothing to release
    close_backend(closing)
    assert closing.closed == 1


def test_a_notifier_that_cannot_be_built_never_blocks_the_deploy(tmp_path: Path) -> None:
    """A missing Slack token: the deploy is built without that notifier and says so."""
    from deployflow.backends import connect
    from deployflow.tracking.ledger import Ledger

    spec = parse_spec(spec_data(notifications={"notifiers": [{"kind": "slack", "channel": "#d"}]}))
    warnings: list[str] = []
    ledger = Ledger.for_url(f"sqlite:///{tmp_path / 't.db'}")
    backends = connect(spec, ledger, BuildContext(env={}), warn=warnings.append)
    assert backends.notifiers == ()
    assert backends.router is not None
    [warning] = warnings
    assert "notifier 1 (slack) left out, the deploy goes on without it" in warning
    assert "DEPLOYFLOW_SLACK_TOKEN" in warning
