"""SlackNotifier through the real slack_sdk client against the local FakeSlackAPI."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from deployflow.fakes.slack_api import FakeSlackAPI
from deployflow.notify.slack import SlackNotifier, format_deploy_announcement
from deployflow.processes import free_port

pytestmark = pytest.mark.integration

TOKEN = "xoxb-1234-good-secret-token"


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(token=TOKEN, channels=["deploys"]) as fake:
        yield fake


def _notifier(slack: FakeSlackAPI, token: str = TOKEN, channel: str = "#deploys", **kw):
    return SlackNotifier(SecretStr(token), channel, base_url=slack.base_url, **kw)


def test_message_is_delivered_with_text_blocks_and_channel(slack):
    text = format_deploy_announcement(
        "payments", "2.4.0", "production", "canary", stages=[5, 25, 100], on_call="@alice"
    )
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]

    result = _notifier(slack).post(text, blocks=blocks)

    assert result.ok, result.error
    assert result.error is None
    assert result.channel == "#deploys"
    assert result.ts == "1700000000.000001"
    [message] = slack.messages
    assert message.channel == "#deploys"
    assert message.text == text
    assert message.blocks == blocks


def test_wrong_token_is_a_clear_error_without_the_token(slack, caplog):
    bad_token = "xoxb-9999-wrong-secret-token"
    notifier = _notifier(slack, token=bad_token)
    with caplog.at_level(logging.DEBUG):
        result = notifier.post("deploying")

    assert not result.ok
    assert "invalid_auth" in result.error
    assert "token" in result.error
    assert slack.messages == []
    for shown in (result.error, repr(result), repr(notifier), caplog.text):
        assert bad_token not in shown
    # The failure is logged once at warning level for the deploy log.
    assert "not delivered" in caplog.text


def test_unknown_channel_names_the_channel(slack):
    result = _notifier(slack, channel="#nowhere").post("deploying")
    assert not result.ok
    assert "channel_not_found" in result.error
    assert "'#nowhere'" in result.error


def test_server_down_fails_fast_without_raising():
    notifier = SlackNotifier(
        SecretStr(TOKEN), "#deploys", base_url=f"http://127.0.0.1:{free_port()}/api/", timeout=1
    )
    started = time.monotonic()
    result = notifier.post("rolling back payments")
    elapsed = time.monotonic() - started

    assert not result.ok
    assert "cannot reach Slack API" in result.error
    assert "Connection refused" in result.error
    assert TOKEN not in result.error
    # One connection retry with a short backoff, never a long hang.
    assert elapsed < 5


def test_server_that_never_answers_times_out():
    # Accepts the TCP connection (the kernel does, from the backlog) but never replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        notifier = SlackNotifier(
            SecretStr(TOKEN), "#deploys", base_url=f"http://127.0.0.1:{port}/api/", timeout=1
        )
        started = time.monotonic()
        result = notifier.post("rolling back payments")
        elapsed = time.monotonic() - started

    assert not result.ok
    assert result.error == "Slack API did not answer within 1s"
    assert elapsed < 5


def test_server_error_fails_and_is_not_retried(slack):
    slack.fail_next(500)
    result = _notifier(slack).post("deploying")
    assert not result.ok
    assert "HTTP 500" in result.error
    # Retrying a 500 could post the alert twice if Slack had already accepted it.
    assert slack.calls == ["chat.postMessage"]
    assert slack.messages == []


def test_short_rate_limit_is_waited_out_once(slack):
    slack.fail_next(429, retry_after=1)
    started = time.monotonic()
    result = _notifier(slack).post("deploying")
    assert result.ok, result.error
    assert time.monotonic() - started >= 1
    assert slack.calls == ["chat.postMessage", "chat.postMessage"]
    assert [m.text for m in slack.messages] == ["deploying"]


def test_long_rate_limit_fails_at_once_instead_of_sleeping(slack):
    slack.fail_next(429, retry_after=30)
    started = time.monotonic()
    result = _notifier(slack, max_rate_limit_wait=5).post("deploying")
    assert not result.ok
    assert "rate limited" in result.error
    assert "30" in result.error
    assert time.monotonic() - started < 5
    assert slack.messages == []


def test_fake_answers_auth_test_like_slack(slack):
    assert WebClient(token=TOKEN, base_url=slack.base_url).auth_test()["ok"] is True
    with pytest.raises(SlackApiError) as caught:
        WebClient(token="xoxb-other", base_url=slack.base_url).auth_test()
    assert caught.value.response["error"] == "invalid_auth"
