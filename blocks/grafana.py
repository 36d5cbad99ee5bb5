"""Grafana as a Prefect block: where deploys are marked on dashboards, and the token to do it."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from deployflow.providers.grafana import GrafanaAnnotator


class GrafanaBlock(Block):
    """A Grafana server and a service account token that may write annotations.

    Attributes:
        url: Grafana's base URL.
        token: Service account token with the annotations:write permission.

    Example:
        ```python
        from blocks import GrafanaBlock

        annotator = GrafanaBlock.load("grafana").get_client("payments-dashboard")
        annotator.point("payments 2.4.0 stage 1 promoted", ["deployflow"])
        ```
    """

    _description = "Grafana URL and service account token for deployflow's deploy annotations."

    url: str = Field(description="Grafana's base URL, e.g. https://grafana.example.com.")
    token: SecretStr = Field(
        description="Service account token with the annotations:write permission."
    )

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"url: must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    def get_client(
        self,
        dashboard_uid: str | None = None,
        panel_id: int | None = None,
        *,
        url: str | None = None,
    ) -> GrafanaAnnotator:
        """Build the annotator for one dashboard (or all of them).

        Args:
            dashboard_uid: UID of the dashboard to annotate; None: organisation-wide.
            panel_id: Only this panel of the dashboard.
            url: Another Grafana base URL than the block's (a spec may name its own).

        Returns:
            A ``GrafanaAnnotator``; its methods never raise for a delivery failure.
        """
        return GrafanaAnnotator(self.token, url or self.url, dashboard_uid, panel_id)
