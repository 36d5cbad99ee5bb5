"""One Slack thread per deploy: the parent (Block Kit), replies in its thread, the parent
rewritten with the outcome; through slack_sdk against the local FakeSlackAPI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier
from deployflow.providers.base import DeployCard, NotificationResult, ThreadedNotifier

pytestmark = pytest.mark.integration

TOKEN = "xoxb-thread-secret-token"
CARD = DeployCard(
    title=":rocket: Deploying *shop* `v2` to *production*",
    fields=(("Service", "shop"), ("Version", "v2"), ("On-call", "@alice")),
    links=(("Dashboard", "http://grafana.test/d/shop"),),
    text=":rocket: Deploying *shop* `v2` to *production* (canary)",
)


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token=TOKEN, channels=["deploys"]) as fake:
        yield fake


def notifier(slack: FakeSlackAPI) -> SlackNotifier:
    return SlackNotifier(SecretStr(TOKEN), "#deploys", base_url=slack.base_url)


def test_a_deploy_is_one_thread_and_its_parent_ends_with_the_outcome(slack):
    n = notifier(slack)
    assert isinstance(n, ThreadedNotifier)

    parent = n.announce(CARD)
    first = n.reply(parent, "stage 1: 5% promoted")
    verdict = n.reply(parent, "rolled back to v1: error rate 20% > 5%")
    concluded = n.conclude(parent, ":rewind: *rolled back* to v1")

    assert [r.error for r in (parent, first, verdict, concluded)] == [None] * 4
    top, *replies = slack.messages
    assert top.thread_ts is None
    assert [b["type"] for b in top.blocks] == ["section", "section", "context"]
    assert {"type": "mrkdwn", "text": "*On-call*\n@alice"} in top.blocks[1]["fields"]
    assert [m.text for m in slack.thread(top.ts)] == [
        "stage 1: 5% promoted",
        "rolled back to v1: error rate 20% > 5%",
    ]
    assert len(replies) == 2
    [update] = slack.updates
    assert update.ts == top.ts
    assert update.channel == "C00000001"  # chat.update takes the channel id
    assert update.blocks[0]["text"]["text"] == ":rewind: *rolled back* to v1"
    assert update.blocks[1:] == top.blocks


def test_a_rate_limited_reply_is_retried_as_slack_asks(slack):
    n = notifier(slack)
    parent = n.announce(CARD)
    slack.fail_next(429, retry_after=0)
    reply = n.reply(parent, "stage 1: 5% promoted")
    assert reply.ok, reply.error
    assert slack.calls[-2:] == ["chat.postMessage", "chat.postMessage"]


def test_a_failing_slack_never_raises_and_replies_go_to_the_channel(slack):
    n = notifier(slack)
    slack.fail_next(500)
    parent = n.announce(CARD)
    assert not parent.ok
    reply = n.reply(parent, "rolled back")
    assert reply.ok
    assert slack.messages[-1].thread_ts is None
    concluded = n.conclude(parent, "rolled back")
    assert concluded == NotificationResult(
        ok=False, channel="#deploys", error="no parent message to update"
    )
    assert slack.updates == []
