"""The on-call section of the spec: sources by kind, per-environment confirmation, the prompt."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from deployflow.providers import registry
from deployflow.providers.base import BackendConfigError, BuildContext, OnCallPerson, OnCallRoster
from deployflow.providers.oncall import StaticOnCall, confirmation_prompt
from deployflow.providers.pagerduty import PagerDutyOnCall
from deployflow.spec import SpecError, parse_spec
from tests.samples import spec_data

pytestmark = pytest.mark.unit


def on_call(section: object):
    return parse_spec(spec_data(notifications={"on_call": section})).notifications.on_call


def problems(section: object) -> dict[str, str]:
    with pytest.raises(SpecError) as error:
        on_call(section)
    return dict(error.value.problems)


def test_a_plain_name_is_one_static_person_who_never_has_to_confirm() -> None:
    section = on_call("@alice")
    assert section.kind == "static"
    assert section.names == ["@alice"]
    assert not section.confirmation_required("production")
    roster = registry.build("on_call", section, BuildContext(env={})).current()
    assert roster.people == (OnCallPerson("@alice"),)
    assert roster.summary == "@alice"


def test_confirmation_is_required_only_where_the_spec_says_so() -> None:
    section = on_call(
        {"kind": "static", "names": ["@alice"], "confirm": {"production": True, "sandbox": False},
         "confirm_timeout": "15m"}
    )  # fmt: skip
    assert section.confirmation_required("production")
    assert not section.confirmation_required("sandbox")
    assert not section.confirmation_required("staging")
    assert section.confirm_timeout == 900


def test_bad_on_call_sections_name_the_field() -> None:
    assert (
        "unknown on_call kind 'opsgenie'"
        in problems({"kind": "opsgenie"})["notifications.on_call.kind"]
    )
    assert (
        "schedule_ids or escalation_policy_ids"
        in problems({"kind": "pagerduty"})["notifications.on_call"]
    )
    found = problems({"kind": "static", "names": ["@a"], "confirm": {"Prod!": True}})
    assert "'Prod!': not an environment name" in found["notifications.on_call.confirm"]
    found = problems({"kind": "static", "names": ["@a"], "confirm_timeout": "0s"})
    assert "notifications.on_call.confirm_timeout" in found


def test_pagerduty_without_a_block_needs_the_fallback_token() -> None:
    section = on_call({"kind": "pagerduty", "schedule_ids": ["PSCHED1"]})
    with pytest.raises(BackendConfigError, match="DEPLOYFLOW_PAGERDUTY_TOKEN"):
        registry.build("on_call", section, BuildContext(env={}))
    source = registry.build(
        "on_call", section, BuildContext(env={"DEPLOYFLOW_PAGERDUTY_TOKEN": "pd-secret-123"})
    )
    assert isinstance(source, PagerDutyOnCall)
    assert source.describe() == "pagerduty schedules PSCHED1"
    assert "pd-secret-123" not in repr(source)


def test_pagerduty_with_a_block_needs_a_prefect_api() -> None:
    section = on_call({"kind": "pagerduty", "block": "pd", "escalation_policy_ids": ["P1"]})
    with pytest.raises(BackendConfigError, match=r"notifications\.on_call\.block"):
        registry.build("on_call", section, BuildContext(env={}))


def test_the_roster_summary_says_when_nobody_is_known() -> None:
    assert OnCallRoster("pagerduty x", error="401").summary == "unknown (401)"
    assert "names nobody" in OnCallRoster("pagerduty x").summary
    two = OnCallRoster("s", (OnCallPerson("Ann", "ann@x.test"), OnCallPerson("Bo")))
    assert two.summary == "Ann <ann@x.test>, Bo"


def test_the_prompt_names_the_release_who_is_on_call_and_the_deadline() -> None:
    roster = StaticOnCall(["@alice"]).current()
    text = confirmation_prompt("shop", "v2", "production", roster, 900)
    assert "shop v2 to production" in text
    assert "@alice" in text
    assert "15 min" in text
    assert "nobody confirmed on call" in text


def test_a_pagerduty_source_needs_something_to_ask() -> None:
    with pytest.raises(ValueError, match="schedule_ids or escalation_policy_ids"):
        PagerDutyOnCall(SecretStr("t"))
