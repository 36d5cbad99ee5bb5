"""Alerts and dependencies against a real Alertmanager (Debian package) on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from deployflow.processes import free_port
from deployflow.providers.alertmanager import AlertmanagerAlerts
from deployflow.providers.dependencies import HttpDependency
from deployflow.sandbox.alertmanager import LocalAlertmanager
from deployflow.signals import AlertWatch, preflight
from tests.contracts import AlertSourceContract, DependencyContract

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAlertmanager]:
    with LocalAlertmanager(tmp_path_factory.mktemp("alertmanager")) as am:
        yield am


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


class TestAlertmanagerAlerts(AlertSourceContract):
    @pytest.fixture
    def alert_source(self, alertmanager: LocalAlertmanager) -> AlertmanagerAlerts:
        return AlertmanagerAlerts(alertmanager.url, ['service="contract"'])

    @pytest.fixture
    def fire_alert(self, alertmanager: LocalAlertmanager):
        return lambda name: alertmanager.post_alert({"alertname": name, "service": "contract"})

    @pytest.fixture
    def unreachable_alert_source(self) -> AlertmanagerAlerts:
        return AlertmanagerAlerts(closed_url(), ['service="contract"'], timeout=1.0)


class TestHttpDependency(DependencyContract):
    @pytest.fixture
    def up_dependency(self, alertmanager: LocalAlertmanager) -> HttpDependency:
        return HttpDependency("alertmanager", f"{alertmanager.url}/-/healthy")

    @pytest.fixture
    def down_dependency(self) -> HttpDependency:
        return HttpDependency("payments", f"{closed_url()}/healthz", timeout=1.0)


def test_only_active_alerts_matching_every_matcher_count(alertmanager: LocalAlertmanager) -> None:
    am = alertmanager
    am.post_alert({"alertname": "ShopDown", "service": "shop", "severity": "page"}, summary="5xx")
    am.post_alert({"alertname": "ShopSlow", "service": "shop", "severity": "ticket"})
    am.post_alert({"alertname": "OtherDown", "service": "other", "severity": "page"})
    am.post_alert({"alertname": "ShopOld", "service": "shop", "severity": "page"}, ended=True)
    am.post_alert({"alertname": "ShopMuted", "service": "shop", "severity": "page"})
    now = datetime.now(UTC)
    silence = {
        "matchers": [{"name": "alertname", "value": "ShopMuted", "isRegex": False}],
        "startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat(),
        "createdBy": "test", "comment": "muted on purpose",
    }  # fmt: skip
    httpx.post(f"{am.url}/api/v2/silences", json=silence, timeout=5).raise_for_status()

    read = AlertmanagerAlerts(am.url, ['service="shop"', 'severity=~"page|critical"']).firing()
    assert read.error is None
    assert read.names == ["ShopDown"]
    assert str(read.alerts[0]).startswith("ShopDown{service=shop, severity=page} since ")
    assert str(read.alerts[0]).endswith("(5xx)")


def test_preflight_blocks_on_a_firing_alert_and_names_the_dependency_down(
    alertmanager: LocalAlertmanager,
) -> None:
    alertmanager.post_alert({"alertname": "DatabaseDown", "service": "preflight"})
    watch = AlertWatch(AlertmanagerAlerts(alertmanager.url, ['service="preflight"']))
    up = HttpDependency("alertmanager", f"{alertmanager.url}/-/healthy")
    down = HttpDependency("payments", f"{closed_url()}/healthz", timeout=1.0)
    found = preflight(watch, [up, down])
    assert found[0].startswith("alert(s) already firing: DatabaseDown (do not deploy into")
    assert found[1].startswith("dependency down: payments (http://127.0.0.1:")
    assert "alertmanager" not in found[1]
    alertmanager.post_alert({"alertname": "DatabaseDown", "service": "preflight"}, ended=True)
    assert preflight(watch, [up]) == []


def test_an_alertmanager_that_does_not_answer_blocks(tmp_path: Path) -> None:
    watch = AlertWatch(AlertmanagerAlerts(closed_url(), ['service="shop"'], timeout=1.0))
    (problem,) = preflight(watch, [])
    assert problem.startswith("alerts cannot be evaluated (alertmanager at http://127.0.0.1:")
    assert "does not answer" in problem
