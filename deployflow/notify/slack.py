"""Post deploy announcements and rollback alerts to Slack through ``slack_sdk.WebClient``.

A notification is best effort: ``SlackNotifier.post`` never raises for a delivery failure, because a
Slack outage must never stop a rollback. Failures come back as ``NotificationResult(ok=False)`` with
an error message meant for logs, which never contains the token.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, model_validator

from deployflow.providers.base import (
    BackendConfigError,
    BuildContext,
    DeployCard,
    NotificationResult,
    Notifier,
)
from deployflow.spec_types import HttpUrl, StrictModel

if TYPE_CHECKING:
    # slack_sdk is imported when a notifier is built (``SlackNotifier.__init__``), not with this
    # module: the backend registry imports it in every run, most of which post nothing to Slack.
    from slack_sdk.errors import SlackApiError
    from slack_sdk.http_retry import HttpResponse, RetryHandler
    from slack_sdk.web import SlackResponse

logger = logging.getLogger(__name__)

# What Slack's error codes mean for the person reading the deploy log.
_SLACK_ERROR_HINTS = {
    "invalid_auth": "Slack rejected the bot token (invalid_auth): check the configured token",
    "not_authed": "no Slack token was sent (not_authed): configure a bot token",
    "token_revoked": "the Slack bot token was revoked (token_revoked)",
    "account_inactive": "the Slack bot's account is inactive (account_inactive)",
    "channel_not_found": "Slack channel {channel!r} not found (channel_not_found): "
    "check the name and invite the bot",
    "not_in_channel": "the bot is not in Slack channel {channel!r} (not_in_channel): invite it",
    "is_archived": "Slack channel {channel!r} is archived (is_archived)",
    "missing_scope": "the Slack bot lacks the chat:write scope (missing_scope)",
}


TOKEN_ENV = "DEPLOYFLOW_SLACK_TOKEN"
SLACK_BLOCK_TYPE = "slack"


class SlackNotifierSpec(StrictModel):
    """Announcements and rollback alerts in a Slack channel, through slack-sdk.

    The bot token comes from a Slack block saved in Prefect (``block``), or, as the documented
    fallback for machines without blocks, from ``DEPLOYFLOW_SLACK_TOKEN``; never from the spec.
    """

    kind: Literal["slack"] = Field(description="Slack Web API (chat.postMessage).")
    block: str | None = Field(
        None,
        min_length=1,
        description="Name of the deployflow Slack block holding the bot token (and a default "
        "channel and base URL).",
    )
    channel: str | None = Field(
        None,
        min_length=1,
        description="Channel name or id, e.g. '#deploys'; overrides the block's channel.",
    )
    base_url: HttpUrl | None = Field(
        None, description="Slack Web API base URL (default https://slack.com/api/)."
    )

    @model_validator(mode="after")
    def _channel_known(self) -> SlackNotifierSpec:
        if self.block is None and self.channel is None:
            raise ValueError("name a Slack block (block) or a channel (channel), or both")
        return self


def _retry_after_seconds(response: HttpResponse) -> float | None:
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return float(values[0])
            except ValueError:
                return None
    return None


def _bounded_rate_limit_retry(max_wait: float) -> RetryHandler:
    """Retry a 429 once, only if Slack asks us to wait no longer than ``max_wait`` seconds.

    slack_sdk's handler sleeps for whatever ``Retry-After`` says; during a rollback a long sleep is
    worse than a missed message, so a long wait becomes a failure result instead.
    """
    from slack_sdk.http_retry import (
        HttpRequest,
        RateLimitErrorRetryHandler,
        RetryState,
    )

    class BoundedRateLimitRetry(RateLimitErrorRetryHandler):
        def _can_retry(
            self,
            *,
            state: RetryState,
            request: HttpRequest,
            response: HttpResponse | None = None,
            error: Exception | None = None,
        ) -> bool:
            if response is None or response.status_code != 429:
                return False
            wait = _retry_after_seconds(response)
            return wait is not None and wait <= max_wait

    return BoundedRateLimitRetry(max_retry_count=1)


class SlackNotifier:
    """Posts messages to one Slack channel.

    Args:
        token: Bot token (``xoxb-...``).
        channel: Channel name (``#deploys``) or id.
        base_url: Web API base URL; None for Slack itself. Tests and the sandbox pass the URL of
            ``deployflow.fakes.slack_api.FakeSlackAPI``.
        timeout: Seconds to wait for Slack per attempt.
        max_rate_limit_wait: Longest ``Retry-After`` (seconds) honoured with one retry; longer
            waits fail at once.
        connection_retries: Retries after a connection error (refused, reset). Server errors
            (HTTP 5xx) are not retried: Slack may have posted the message already, and a duplicate
            alert is worse than a missing one.
    """

    def __init__(
        self,
        token: SecretStr,
        channel: str,
        base_url: str | None = None,
        *,
        timeout: int = 10,
        max_rate_limit_wait: float = 5.0,
        connection_retries: int = 1,
    ) -> None:
        if not channel.strip():
            raise ValueError("channel: must be a Slack channel name like '#deploys' or an id")
        if timeout < 1:
            raise ValueError(f"timeout: must be at least 1 second, got {timeout}")
        self.channel = channel.strip()
        self._token = token
        from slack_sdk import WebClient
        from slack_sdk.http_retry import ConnectionErrorRetryHandler

        handlers: list[RetryHandler] = [_bounded_rate_limit_retry(max_rate_limit_wait)]
        if connection_retries > 0:
            handlers.append(ConnectionErrorRetryHandler(max_retry_count=connection_retries))
        options: dict[str, Any] = {}
        if base_url is not None:
            options["base_url"] = base_url
        self._cards: dict[str, DeployCard] = {}
        self._channel_ids: dict[str, str] = {}
        self._client = WebClient(
            token=token.get_secret_value(), timeout=timeout, retry_handlers=handlers, **options
        )

    @classmethod
    def from_spec(cls, spec: SlackNotifierSpec, ctx: BuildContext) -> Notifier:
        """The notifier a spec's ``kind: slack`` section describes.

        Raises:
            BackendConfigError: No token: neither a block nor ``DEPLOYFLOW_SLACK_TOKEN``.
        """
        if spec.block is not None:
            block = ctx.load_block(SLACK_BLOCK_TYPE, spec.block, "notifications.notifiers.block")
            notifier: Notifier = block.get_client(channel=spec.channel, base_url=spec.base_url)
            return notifier
        token = ctx.env.get(TOKEN_ENV, "").strip()
        if not token:
            raise BackendConfigError(
                "notifications.notifiers: the slack notifier has no token: save a Slack block "
                f"and name it in 'block', or set {TOKEN_ENV} where the flow runs"
            )
        if spec.channel is None:  # the spec's validator already refuses this
            raise BackendConfigError("notifications.notifiers: the slack notifier has no channel")
        return cls(SecretStr(token), spec.channel, base_url=spec.base_url)

    def describe(self) -> str:
        return f"slack {self.channel}"

    def __repr__(self) -> str:
        return f"SlackNotifier(channel={self.channel!r}, base_url={self._client.base_url!r})"

    def _scrub(self, message: str) -> str:
        secret = self._token.get_secret_value()
        return message.replace(secret, "***") if secret else message

    def _describe_api_error(self, exc: SlackApiError) -> str:
        response = exc.response
        status = response.status_code
        code = response.get("error") if isinstance(response.data, dict) else None
        if status == 429:
            wait = response.headers.get("Retry-After") or response.headers.get("retry-after")
            return f"Slack rate limited the request (retry after {wait}s)"
        if code in _SLACK_ERROR_HINTS:
            return _SLACK_ERROR_HINTS[code].format(channel=self.channel)
        if status >= 400:
            return f"Slack API answered HTTP {status} ({code or 'no error code'})"
        return f"Slack API refused the message ({code or 'no error code'})"

    def post(
        self,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> NotificationResult:
        """Send a message; never raises for a delivery failure.

        Args:
            text: Message text (Slack mrkdwn); also the notification fallback when blocks are sent.
            blocks: Optional Block Kit blocks.
            thread_ts: Post as a reply in the thread of this message.

        Returns:
            ``ok=True`` with Slack's ``ts``, or ``ok=False`` with a token-free error message.
        """
        return self._send(
            lambda: self._client.chat_postMessage(
                channel=self.channel, text=text, blocks=blocks, thread_ts=thread_ts
            )
        )

    def announce(self, card: DeployCard) -> NotificationResult:
        """The deploy's parent message (Block Kit); its stages and verdict go in its thread."""
        result = self.post(card.text, blocks=deploy_blocks(card))
        if result.ok and result.ts is not None:
            self._cards[result.ts] = card
        return result

    def reply(self, parent: NotificationResult, text: str) -> NotificationResult:
        """A reply in the thread of ``parent``; a top-level message when the parent never
        made it to Slack (so the news still reaches the channel)."""
        return self.post(text, thread_ts=parent.ts if parent.ok else None)

    def conclude(self, parent: NotificationResult, outcome: str) -> NotificationResult:
        """Rewrite the parent message with the outcome at its top (chat.update)."""
        card = self._cards.get(parent.ts or "")
        channel_id = self._channel_ids.get(parent.ts or "")
        if not parent.ok or card is None or channel_id is None:
            return NotificationResult(
                ok=False, channel=self.channel, error="no parent message to update"
            )
        return self._send(
            lambda: self._client.chat_update(
                channel=channel_id,
                ts=parent.ts or "",
                text=f"{outcome}\n{card.text}",
                blocks=deploy_blocks(card, outcome),
            )
        )

    def _send(self, call: Callable[[], SlackResponse]) -> NotificationResult:
        from slack_sdk.errors import SlackApiError, SlackClientError

        try:
            response = call()
        except SlackApiError as exc:
            error = self._describe_api_error(exc)
        except TimeoutError:
            error = f"Slack API did not answer within {self._client.timeout}s"
        except (SlackClientError, OSError, HTTPException, ValueError) as exc:
            # URLError (refused, DNS, timeouts wrapped by urllib) is an OSError.
            reason = getattr(exc, "reason", exc)
            error = f"cannot reach Slack API at {self._client.base_url}: {reason}"
        else:
            ts, channel_id = response.get("ts"), response.get("channel")
            if isinstance(ts, str) and isinstance(channel_id, str):
                # chat.update wants the channel's id, which only Slack's answer tells.
                self._channel_ids[ts] = channel_id
            return NotificationResult(ok=True, channel=self.channel, ts=ts)
        error = self._scrub(error)
        logger.warning("Slack notification to %s not delivered: %s", self.channel, error)
        return NotificationResult(ok=False, channel=self.channel, error=error)


def _escape(text: str) -> str:
    # Slack's mrkdwn treats &, < and > as control characters (links, mentions).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_deploy_announcement(
    service: str,
    version: str,
    environment: str,
    strategy: str,
    stages: Sequence[int] = (),
    on_call: str | None = None,
    dashboard_url: str | None = None,
    risk_factors: Sequence[str] = (),
) -> str:
    """The text announcing a deploy that is about to start.

    Args:
        service: Service name.
        version: Version being deployed.
        environment: Target environment.
        strategy: Rollout strategy, e.g. ``canary``.
        stages: Traffic percentages of the rollout stages, e.g. ``[5, 25, 100]``.
        on_call: Who to contact (a Slack handle like ``@alice`` or ``<@U123>``), if known.
        dashboard_url: Link to the service dashboard, if any.
        risk_factors: The risk table's lines (fact, weight, contribution), if it was assessed.

    Returns:
        Slack mrkdwn text, one fact per line.
    """
    lines = [
        f":rocket: Deploying *{_escape(service)}* `{_escape(version)}` "
        f"to *{_escape(environment)}* ({_escape(strategy)})"
    ]
    if stages:
        lines.append("Stages: " + " → ".join(f"{weight}%" for weight in stages))
    if on_call:
        # A raw "<@U123>" mention must stay unescaped to notify the person.
        shown = on_call if on_call.startswith("<@") and on_call.endswith(">") else _escape(on_call)
        lines.append(f"On-call: {shown}")
    if dashboard_url:
        lines.append(f"Dashboard: <{dashboard_url}|open>")
    if risk_factors:
        lines.append("Risk factors:")
        lines += [f"• {_escape(line)}" for line in risk_factors]
    return "\n".join(lines)


def deploy_blocks(card: DeployCard, outcome: str | None = None) -> list[dict[str, Any]]:
    """Block Kit for a deploy's parent message: the outcome once known, the title, the facts as
    fields, the links."""
    blocks: list[dict[str, Any]] = []
    if outcome is not None:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": outcome}})
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": card.title}})
    if card.fields:
        blocks.append(
            {
                "type": "section",
                # Slack shows at most 10 fields in a section.
                "fields": [
                    {"type": "mrkdwn", "text": f"*{_escape(label)}*\n{value}"}
                    for label, value in card.fields[:10]
                ],
            }
        )
    if card.links:
        links = " · ".join(f"<{url}|{_escape(label)}>" for label, url in card.links)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return blocks
