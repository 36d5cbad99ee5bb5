"""PagerDuty credentials as a Prefect block, for the on-call lookup before a release."""

from __future__ import annotations

from collections.abc import Sequence

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from deployflow.providers.pagerduty import PAGERDUTY_API, PagerDutyOnCall


class PagerDutyCredentialsBlock(Block):
    """A PagerDuty REST API key, which deployflow uses to ask who is on call.

    Attributes:
        token: REST API key (read-only is enough: deployflow only reads on-calls).
        base_url: REST API root; leave the default for PagerDuty itself.

    Example:
        ```python
        from blocks import PagerDutyCredentialsBlock

        source = PagerDutyCredentialsBlock.load("pagerduty").get_client(["PABC123"])
        print(source.current().summary)
        ```
    """

    _description = "PagerDuty REST API key used by deployflow to ask who is on call."

    token: SecretStr = Field(description="PagerDuty REST API key (read-only is enough).")
    base_url: str = Field(
        default=PAGERDUTY_API,
        description="PagerDuty REST API root; tests and the sandbox point it at a local fake.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url: must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def get_client(
        self,
        schedule_ids: Sequence[str] = (),
        escalation_policy_ids: Sequence[str] = (),
        *,
        base_url: str | None = None,
    ) -> PagerDutyOnCall:
        """Build the on-call source for some schedules or escalation policies.

        Args:
            schedule_ids: PagerDuty schedule ids.
            escalation_policy_ids: PagerDuty escalation policy ids.
            base_url: Another REST API root than the block's (a spec may name its own).

        Returns:
            A ``PagerDutyOnCall``; its ``current()`` never raises.
        """
        return PagerDutyOnCall(
            self.token,
            schedule_ids,
            escalation_policy_ids,
            base_url=base_url or self.base_url,
        )
