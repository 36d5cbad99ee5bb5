"""Slack configuration as a Prefect block: the bot token and the deploy channel."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from deployflow.notify.slack import SlackNotifier


class SlackNotificationBlock(Block):
    """Where deploy announcements and rollback alerts are posted in Slack.

    Attributes:
        token: Bot token (``xoxb-...``) with the ``chat:write`` scope.
        channel: Channel name (``#deploys``) or id the bot has been invited to.
        base_url: Slack Web API base URL; leave empty for Slack itself.

    Example:
        ```python
        from blocks import SlackNotificationBlock

        notifier = SlackNotificationBlock.load("deploys").get_client()
        notifier.post("deploying payments 2.4.0")
        ```
    """

    _description = "Slack bot token and channel for deployflow's deploy and rollback messages."

    token: SecretStr = Field(
        description="Slack bot token (xoxb-...) with the chat:write scope.",
    )
    channel: str = Field(
        description="Channel name such as '#deploys', or a channel id; the bot must be a member.",
    )
    base_url: str | None = Field(
        default=None,
        description="Slack Web API base URL ending in /api/; empty means Slack itself. "
        "Tests and the sandbox point it at a local fake.",
    )

    @field_validator("channel")
    @classmethod
    def _channel_is_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("channel: must be a Slack channel name like '#deploys' or an id")
        return value.strip()

    def get_client(
        self, *, channel: str | None = None, base_url: str | None = None
    ) -> SlackNotifier:
        """Build the notifier that posts to the configured channel.

        Args:
            channel: Another channel than the block's (a service spec names its own).
            base_url: Another Web API base URL than the block's.

        Returns:
            A ``SlackNotifier``; its ``post`` never raises for a delivery failure.
        """
        return SlackNotifier(
            self.token, channel or self.channel, base_url=base_url or self.base_url
        )
