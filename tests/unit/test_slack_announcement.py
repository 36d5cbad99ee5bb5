"""The deploy announcement text, a pure function (tests/unit/notify is not in my paths)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from deployflow.notify.slack import SlackNotifier, format_deploy_announcement

pytestmark = pytest.mark.unit


def test_announcement_lists_every_fact_on_its_own_line():
    text = format_deploy_announcement(
        service="payments",
        version="2.4.0",
        environment="production",
        strategy="canary",
        stages=[5, 25, 50, 100],
        on_call="<@U024BE7LH>",
        dashboard_url="https://grafana.example.com/d/payments",
    )
    assert text.splitlines() == [
        ":rocket: Deploying *payments* `2.4.0` to *production* (canary)",
        "Stages: 5% → 25% → 50% → 100%",
        "On-call: <@U024BE7LH>",
        "Dashboard: <https://grafana.example.com/d/payments|open>",
    ]


def test_announcement_omits_unknown_facts_and_escapes_slack_control_characters():
    text = format_deploy_announcement("a<b>&c", "1.0", "staging", "blue_green", on_call="<oncall>")
    assert text.splitlines() == [
        ":rocket: Deploying *a&lt;b&gt;&amp;c* `1.0` to *staging* (blue_green)",
        "On-call: &lt;oncall&gt;",
    ]


def test_notifier_refuses_an_empty_channel_by_name():
    with pytest.raises(ValueError, match="channel: must be a Slack channel"):
        SlackNotifier(SecretStr("xoxb-x"), "  ")
