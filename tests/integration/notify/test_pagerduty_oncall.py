"""PagerDutyOnCall against a local server speaking PagerDuty's REST API v2 (GET /oncalls)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from deployflow.fakes.pagerduty_api import FakePagerDutyAPI
from deployflow.providers.base import OnCallPerson
from deployflow.providers.pagerduty import PagerDutyOnCall

pytestmark = pytest.mark.integration

TOKEN = "pd-token-never-shown-42"


@pytest.fixture
def pagerduty() -> Iterator[FakePagerDutyAPI]:
    with FakePagerDutyAPI(token=TOKEN) as api:
        yield api


def source(api: FakePagerDutyAPI, token: str = TOKEN, **options: object) -> PagerDutyOnCall:
    return PagerDutyOnCall(
        SecretStr(token),
        ["PSCHED1"],
        base_url=api.base_url,
        **options,  # type: ignore[arg-type]
    )


def test_names_the_first_escalation_level_of_the_schedule(pagerduty: FakePagerDutyAPI) -> None:
    pagerduty.put_on_call("PSCHED1", "Alice Example", "alice@example.com")
    pagerduty.put_on_call("PSCHED1", "Bob Backup", level=2)
    pagerduty.put_on_call("POTHER", "Carol Elsewhere")

    roster = source(pagerduty).current()

    assert roster.error is None
    assert roster.people == (OnCallPerson("Alice Example", "alice@example.com"),)
    assert roster.source == "pagerduty schedules PSCHED1"
    (query,) = pagerduty.requests
    assert query["schedule_ids[]"] == ["PSCHED1"]
    assert query["include[]"] == ["users"]


def test_escalation_policies_are_asked_too(pagerduty: FakePagerDutyAPI) -> None:
    pagerduty.put_on_call("PSCHED9", "Dana Policy", policy_id="PPOL7")
    roster = PagerDutyOnCall(
        SecretStr(TOKEN), escalation_policy_ids=["PPOL7"], base_url=pagerduty.base_url
    ).current()
    assert [p.name for p in roster.people] == ["Dana Policy"]
    assert pagerduty.requests[0]["escalation_policy_ids[]"] == ["PPOL7"]


def test_every_page_is_read(pagerduty: FakePagerDutyAPI, monkeypatch) -> None:
    monkeypatch.setattr("deployflow.providers.pagerduty._PAGE_SIZE", 2)
    names = [f"Person {n}" for n in range(5)]
    for name in names:
        pagerduty.put_on_call("PSCHED1", name)

    roster = source(pagerduty).current()

    assert [p.name for p in roster.people] == names
    assert [q["offset"] for q in pagerduty.requests] == [["0"], ["2"], ["4"]]


def test_a_refused_token_is_a_clear_error_without_the_token(pagerduty: FakePagerDutyAPI) -> None:
    roster = source(pagerduty, token="pd-wrong-token-77").current()
    assert roster.people == ()
    assert roster.error is not None
    assert "401" in roster.error
    assert "DEPLOYFLOW_PAGERDUTY_TOKEN" in roster.error
    assert "pd-wrong-token-77" not in roster.error


def test_a_rate_limit_is_waited_out_as_retry_after_says(pagerduty: FakePagerDutyAPI) -> None:
    pagerduty.put_on_call("PSCHED1", "Alice Example")
    pagerduty.fail_next(429, times=2, retry_after=3)
    waits: list[float] = []

    roster = source(pagerduty, sleep=waits.append).current()

    assert [p.name for p in roster.people] == ["Alice Example"]
    assert waits == [3.0, 3.0]
    assert len(pagerduty.requests) == 3


def test_a_rate_limit_longer_than_the_patience_is_an_error(pagerduty: FakePagerDutyAPI) -> None:
    pagerduty.fail_next(429, retry_after=600)
    waits: list[float] = []
    roster = source(pagerduty, sleep=waits.append, max_rate_limit_wait=30).current()
    assert waits == []
    assert roster.error == "PagerDuty rate limited the on-call lookup (429, Retry-After 600s)"


def test_an_unreachable_pagerduty_is_an_error_not_an_exception() -> None:
    with FakePagerDutyAPI() as api:
        gone = api.base_url
    roster = PagerDutyOnCall(SecretStr(TOKEN), ["PSCHED1"], base_url=gone, timeout=2).current()
    assert roster.error is not None
    assert roster.error.startswith(f"cannot reach PagerDuty at {gone}")


def test_a_server_error_is_reported_with_pagerdutys_message(pagerduty: FakePagerDutyAPI) -> None:
    pagerduty.fail_next(500)
    roster = source(pagerduty).current()
    assert roster.error == "PagerDuty answered HTTP 500 to GET /oncalls: Internal Server Error"
