"""Deploys on Grafana dashboards, through Grafana's annotations HTTP API.

A region spans the deploy (``POST /api/annotations`` with ``time`` and ``timeEnd`` at its start,
``PATCH /api/annotations/<id>`` with the real end), and a point marks each stage and the outcome.
The service account token comes from a Grafana block saved in Prefect (``block``), or from
``DEPLOYFLOW_GRAFANA_TOKEN``; never from the spec. Best effort: an annotation that cannot be
written is an ``AnnotationResult`` with ``ok=False``.

``dashboard_link`` gives a dashboard URL the deploy's time range (Grafana's ``from``/``to``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, model_validator

from deployflow.providers.base import AnnotationResult, Annotator, BackendConfigError, BuildContext
from deployflow.spec_types import HttpUrl, StrictModel

TOKEN_ENV = "DEPLOYFLOW_GRAFANA_TOKEN"
GRAFANA_BLOCK_TYPE = "grafana"


class GrafanaAnnotationsSpec(StrictModel):
    """Annotations on a Grafana dashboard (or organisation-wide when no dashboard is named)."""

    kind: Literal["grafana"] = Field(description="Grafana HTTP API, /api/annotations.")
    block: str | None = Field(
        None,
        min_length=1,
        description="Name of the deployflow Grafana block (URL and token); empty: 'url' here "
        f"and the token from {TOKEN_ENV}.",
    )
    url: HttpUrl | None = Field(
        None,
        description="Grafana's base URL, e.g. https://grafana.example.com; overrides the "
        "block's. Needed without a block.",
    )
    dashboard_uid: str | None = Field(
        None, min_length=1, description="UID of the dashboard to annotate; empty: all of them."
    )
    panel_id: int | None = Field(None, ge=1, description="Only this panel of the dashboard.")

    @model_validator(mode="after")
    def _somewhere(self) -> GrafanaAnnotationsSpec:
        if self.block is None and self.url is None:
            raise ValueError("a grafana annotator needs 'block' (a saved Grafana block) or 'url'")
        return self


def dashboard_link(url: str, start: datetime, end: datetime | None = None) -> str:
    """``url`` showing the deploy's time range: Grafana's ``from`` and ``to`` in milliseconds
    since the epoch, ``to=now`` while the deploy runs. Other query parameters are kept; an
    earlier ``from``/``to`` is replaced."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    query = [(k, v) for k, v in query if k not in ("from", "to")]
    query.append(("from", str(int(start.timestamp() * 1000))))
    query.append(("to", str(int(end.timestamp() * 1000)) if end is not None else "now"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _now_ms() -> int:
    return int(time.time() * 1000)


class GrafanaAnnotator:
    """Writes one deploy's annotations to Grafana.

    Args:
        token: Service account token with the annotations:write permission.
        url: Grafana's base URL.
        dashboard_uid: Dashboard to annotate; None for organisation-wide annotations.
        panel_id: Panel of that dashboard, if only one.
        transport: httpx transport; None is the network.
        clock: Milliseconds since the epoch (tests pass a fixed clock).
    """

    def __init__(
        self,
        token: SecretStr,
        url: str,
        dashboard_uid: str | None = None,
        panel_id: int | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 5.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.url = url.rstrip("/")
        self.dashboard_uid = dashboard_uid
        self.panel_id = panel_id
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._clock = clock
        self._region: int | None = None

    @classmethod
    def from_spec(cls, spec: GrafanaAnnotationsSpec, ctx: BuildContext) -> Annotator:
        """The annotator a spec's ``kind: grafana`` section describes.

        Raises:
            BackendConfigError: The named block is not saved, or without a block
                ``DEPLOYFLOW_GRAFANA_TOKEN`` is not set.
        """
        if spec.block is not None:
            block = ctx.load_block(GRAFANA_BLOCK_TYPE, spec.block, "notifications.dashboards.block")
            annotator: Annotator = block.get_client(spec.dashboard_uid, spec.panel_id, url=spec.url)
            return annotator
        token = ctx.env.get(TOKEN_ENV, "").strip()
        if not token or spec.url is None:
            raise BackendConfigError(
                f"notifications.dashboards: the grafana annotator has no token: save a Grafana "
                f"block and name it in 'block', or set {TOKEN_ENV} where the flow runs (a "
                "service account token with annotations:write)"
            )
        return cls(SecretStr(token), spec.url, spec.dashboard_uid, spec.panel_id)

    def describe(self) -> str:
        where = f"dashboard {self.dashboard_uid}" if self.dashboard_uid else "all dashboards"
        return f"grafana annotations at {self.url} ({where})"

    def __repr__(self) -> str:
        return f"GrafanaAnnotator({self.describe()!r})"

    def start_region(self, text: str, tags: Sequence[str]) -> AnnotationResult:
        """Open the deploy's region (it ends where it starts until ``end_region``)."""
        now = self._clock()
        result = self._send("POST", "/api/annotations", self._body(text, tags, now, now))
        if result.ok:
            self._region = result.id
        return result

    def point(self, text: str, tags: Sequence[str], at_ms: int | None = None) -> AnnotationResult:
        when = self._clock() if at_ms is None else at_ms
        return self._send("POST", "/api/annotations", self._body(text, tags, when, None))

    def end_region(self, text: str) -> AnnotationResult:
        """Stretch the region to now and write the outcome into it."""
        if self._region is None:
            return AnnotationResult(False, self.describe(), error="no region was started")
        body = {"timeEnd": self._clock(), "text": text}
        return self._send("PATCH", f"/api/annotations/{self._region}", body, self._region)

    def _body(self, text: str, tags: Sequence[str], start: int, end: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"time": start, "tags": list(tags), "text": text}
        if end is not None:
            body["timeEnd"] = end
        if self.dashboard_uid is not None:
            body["dashboardUID"] = self.dashboard_uid
        if self.panel_id is not None:
            body["panelId"] = self.panel_id
        return body

    def _send(
        self, method: str, path: str, body: dict[str, Any], known_id: int | None = None
    ) -> AnnotationResult:
        headers = {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        try:
            with httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=self._timeout,
                transport=self._transport,
            ) as client:
                response = client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            error = f"cannot reach Grafana at {self.url}: {type(exc).__name__}"
            return AnnotationResult(False, self.describe(), error=error)
        if response.status_code in (401, 403):
            error = (
                f"Grafana refused the token ({response.status_code}): check {TOKEN_ENV} and "
                "its annotations:write permission"
            )
            return AnnotationResult(False, self.describe(), error=error)
        if response.status_code >= 400:
            error = f"Grafana answered HTTP {response.status_code} to {method} {path}"
            return AnnotationResult(False, self.describe(), error=error)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        annotation_id = answer.get("id", known_id) if isinstance(answer, dict) else known_id
        return AnnotationResult(True, self.describe(), id=annotation_id)
