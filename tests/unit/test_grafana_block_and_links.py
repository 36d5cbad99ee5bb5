"""Grafana from a saved block, and dashboard links that carry the deploy's time range."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from blocks import GrafanaBlock
from deployflow.providers import registry
from deployflow.providers.base import BuildContext
from deployflow.providers.grafana import dashboard_link
from deployflow.spec import SpecError, parse_spec
from tests.samples import spec_data

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
END = datetime(2026, 11, 28, 9, 12, 30, tzinfo=UTC)


def test_a_running_deploy_links_from_its_start_to_now() -> None:
    link = dashboard_link("https://grafana.test/d/abc/payments?orgId=1&var-env=prod", START)
    assert link == (
        "https://grafana.test/d/abc/payments?orgId=1&var-env=prod&from=1795856400000&to=now"
    )


def test_a_finished_deploy_links_its_whole_time_range_replacing_an_earlier_one() -> None:
    link = dashboard_link("https://grafana.test/d/abc?from=now-6h&to=now", START, END)
    assert link == "https://grafana.test/d/abc?from=1795856400000&to=1795857150000"


class SavedBlocks:
    def __init__(self, **blocks: Any) -> None:
        self.blocks = blocks
        self.asked: list[tuple[str, str]] = []

    def load(self, block_type: str, name: str) -> Any:
        self.asked.append((block_type, name))
        return self.blocks[name]


def test_a_dashboards_section_names_a_grafana_block_instead_of_url_and_token() -> None:
    data = spec_data(
        notifications={"dashboards": [{"kind": "grafana", "block": "ops", "dashboard_uid": "d1"}]}
    )
    (section,) = parse_spec(data).notifications.dashboards
    saved = SavedBlocks(ops=GrafanaBlock(url="https://grafana.test", token="glsa_secret"))
    built = registry.build("annotator", section, BuildContext(env={}, blocks=saved))
    assert saved.asked == [("grafana", "ops")]
    assert built.describe() == "grafana annotations at https://grafana.test (dashboard d1)"


def test_a_grafana_section_without_block_or_url_is_refused() -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(notifications={"dashboards": [{"kind": "grafana"}]}))
    [(path, message)] = error.value.problems
    assert path == "notifications.dashboards.0"
    assert "needs 'block' (a saved Grafana block) or 'url'" in message
