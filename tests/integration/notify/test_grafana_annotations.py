"""GrafanaAnnotator against a local server speaking Grafana's annotations API."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from deployflow.fakes.grafana_api import FakeGrafanaAPI
from deployflow.providers import registry
from deployflow.providers.base import BackendConfigError, BuildContext
from deployflow.providers.grafana import GrafanaAnnotator
from deployflow.spec import SpecError, parse_spec
from tests.samples import spec_data

pytestmark = pytest.mark.integration

TOKEN = "glsa_never_shown_123"
TAGS = ["deployflow", "service:shop"]


@pytest.fixture
def grafana() -> Iterator[FakeGrafanaAPI]:
    with FakeGrafanaAPI(token=TOKEN) as api:
        yield api


def annotator(api: FakeGrafanaAPI, token: str = TOKEN) -> GrafanaAnnotator:
    ticks = itertools.count(1_000, 500)
    return GrafanaAnnotator(SecretStr(token), api.base_url, "shop-dash", clock=lambda: next(ticks))


def test_a_deploy_is_a_region_with_a_point_per_stage(grafana: FakeGrafanaAPI) -> None:
    a = annotator(grafana)
    assert a.start_region("deploy shop v2", TAGS).ok
    assert a.point("stage 1: 5% promoted", TAGS).ok
    assert a.point("stage 2: 25% promoted", TAGS, at_ms=1_200).ok
    assert a.end_region("v2 succeeded").ok

    region, point, backdated = grafana.annotations
    assert region == {
        "id": 1, "dashboardUID": "shop-dash", "panelId": None, "time": 1_000,
        "timeEnd": 2_000, "tags": TAGS, "text": "v2 succeeded",
    }  # fmt: skip
    assert (point["time"], point["timeEnd"], point["text"]) == (
        1_500,
        1_500,
        "stage 1: 5% promoted",
    )
    assert backdated["time"] == 1_200


def test_a_refused_token_is_a_result_not_an_exception(grafana: FakeGrafanaAPI) -> None:
    result = annotator(grafana, token="glsa_wrong_456").point("x", TAGS)
    assert not result.ok
    assert result.error is not None
    assert "refused the token (401)" in result.error
    assert "glsa_wrong_456" not in result.error
    assert grafana.annotations == []


def test_ending_a_region_that_never_started_says_so(grafana: FakeGrafanaAPI) -> None:
    result = annotator(grafana).end_region("done")
    assert result.error == "no region was started"


def test_the_spec_names_grafana_dashboards_and_the_token_comes_from_the_environment() -> None:
    data = spec_data(
        notifications={"dashboards": [{"kind": "grafana", "url": "http://g.test", "panel_id": 2}]}
    )
    (section,) = parse_spec(data).notifications.dashboards
    with pytest.raises(BackendConfigError, match="DEPLOYFLOW_GRAFANA_TOKEN"):
        registry.build("annotator", section, BuildContext(env={}))
    built = registry.build(
        "annotator", section, BuildContext(env={"DEPLOYFLOW_GRAFANA_TOKEN": "t"})
    )
    assert built.describe() == "grafana annotations at http://g.test (all dashboards)"
    with pytest.raises(SpecError) as error:
        parse_spec(spec_data(notifications={"dashboards": [{"kind": "datadog"}]}))
    assert (
        "notifications.dashboards.0.kind",
        "unknown annotator kind 'datadog'; known kinds: 'grafana'",
    ) in error.value.problems
