"""Prefect blocks: deployflow's configuration and secrets, each with ``get_client()``.

Register them with a Prefect server (or Cloud) with ``prefect block register -m blocks``.
"""

from blocks.github import GitHubCredentialsBlock
from blocks.grafana import GrafanaBlock
from blocks.pagerduty import PagerDutyCredentialsBlock
from blocks.service_spec import ServiceSpecBlock
from blocks.slack import SlackNotificationBlock
from blocks.tracking import TrackingDatabaseBlock

__all__ = [
    "GitHubCredentialsBlock",
    "GrafanaBlock",
    "PagerDutyCredentialsBlock",
    "ServiceSpecBlock",
    "SlackNotificationBlock",
    "TrackingDatabaseBlock",
]
