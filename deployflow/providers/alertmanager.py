"""Alerts from a Prometheus Alertmanager (API v2): which alerts matching the spec's label
matchers fire now.

Only active alerts count (not silenced, not inhibited: a person or a rule decided those need no
action). An Alertmanager that does not answer is ``AlertsRead.error``: the deploy cannot know
whether it would walk into an incident, so it never promotes (a stage) or starts (pre-flight) on
that answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from deployflow.providers.base import AlertsRead, FiringAlert
from deployflow.providers.prometheus import without_credentials
from deployflow.spec_types import Duration, HttpUrl, StrictModel

_MATCHER = re.compile(
    r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(?:"((?:[^"\\]|\\.)*)"|(\S*))\s*$'
)


def parse_matcher(text: str) -> str:
    """A label matcher as Alertmanager's ``filter`` takes it, ``name="value"``; ``text`` may
    leave the value unquoted (``severity=page``). A regex operator's value must compile.

    Raises:
        ValueError: Not a matcher; the message says what one looks like.
    """
    match = _MATCHER.fullmatch(text)
    if match is None:
        raise ValueError(
            f'{text!r} is not a label matcher; write name="value" (operators =, !=, =~, !~), '
            'e.g. service="shop" or severity=~"page|critical"'
        )
    name, op, quoted, bare = match.groups()
    value = json.loads(f'"{quoted}"') if quoted is not None else bare
    if op in ("=~", "!~"):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{text!r}: the regex does not compile: {exc}") from None
    return f"{name}{op}{json.dumps(value)}"


class AlertmanagerSpec(StrictModel):
    """Alerts from a Prometheus Alertmanager."""

    kind: Literal["alertmanager"] = Field(description="Prometheus Alertmanager API v2.")
    url: HttpUrl = Field(description="Base URL of the Alertmanager, e.g. http://alertmanager:9093")
    matchers: list[str] = Field(
        min_length=1,
        description='Label matchers an alert must meet to count, e.g. ["service=\\"shop\\"", '
        '"severity=~\\"page|critical\\""].',
    )
    timeout: Duration = Field(5.0, description="Timeout of one request.")

    @field_validator("matchers")
    @classmethod
    def _matchers(cls, matchers: list[str]) -> list[str]:
        return [parse_matcher(m) for m in matchers]


def _alert(item: Any) -> FiringAlert | None:
    if not isinstance(item, dict) or not isinstance(item.get("labels"), dict):
        return None
    labels = {str(k): str(v) for k, v in item["labels"].items()}
    annotations = item.get("annotations")
    if not isinstance(annotations, dict):
        annotations = {}
    return FiringAlert(
        name=labels.get("alertname", "(unnamed)"),
        labels=tuple(sorted(labels.items())),
        starts_at=str(item.get("startsAt", "")),
        summary=str(annotations.get("summary", "")),
    )


class AlertmanagerAlerts:
    """The ``AlertSource`` for Alertmanager.

    Args:
        url: Base URL of the Alertmanager.
        matchers: Label matchers, as ``parse_matcher`` returns them.
        timeout: Seconds for one request.
        transport: An httpx transport (tests); None is the network.
    """

    def __init__(
        self,
        url: str,
        matchers: list[str],
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.display_url = without_credentials(self.url)
        self.matchers = list(matchers)
        self.timeout = timeout
        self.transport = transport

    @classmethod
    def from_spec(cls, spec: AlertmanagerSpec) -> AlertmanagerAlerts:
        return cls(spec.url, spec.matchers, spec.timeout)

    def describe(self) -> str:
        return f"alertmanager at {self.display_url} ({', '.join(self.matchers)})"

    def firing(self) -> AlertsRead:
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
            *(("filter", m) for m in self.matchers),
        ]
        where = f"alertmanager at {self.display_url}"
        try:
            # A client per ask: a watch lives as long as a run, and an idle pool would outlive it.
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.get(f"{self.url}/api/v2/alerts", params=params)
        except httpx.HTTPError as exc:
            return AlertsRead(error=f"{where} does not answer: {type(exc).__name__}: {exc}")
        if response.status_code != 200:
            return AlertsRead(
                error=f"{where} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            body = response.json()
        except ValueError:
            return AlertsRead(error=f"{where} answered something that is not JSON")
        if not isinstance(body, list):
            return AlertsRead(error=f"{where} answered a {type(body).__name__}, not a list")
        alerts = [a for a in (_alert(item) for item in body) if a is not None]
        return AlertsRead(tuple(sorted(alerts, key=lambda a: (a.name, a.labels))))
