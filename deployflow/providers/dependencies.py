"""Services the deployed one depends on, checked before the deploy and in every verification.

Two kinds: ``http`` (a health URL that answers 2xx while the dependency is up) and ``prometheus``
(a query whose every value must lie within ``min``/``max``, e.g. ``up{job="payments"}`` with
``min: 1``, or an error ratio with ``max: 0.05``). A check never raises: a dependency that cannot be
checked (no answer, no data, a failed query) is reported down with the reason.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import httpx
from pydantic import Field, model_validator

from deployflow.providers.base import DependencyStatus
from deployflow.providers.prometheus import without_credentials
from deployflow.spec_types import Duration, HttpUrl, StrictModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class HttpDependencySpec(StrictModel):
    """A dependency checked by its health URL."""

    kind: Literal["http"] = Field(description="A health URL answering 2xx while it is up.")
    name: str = Field(pattern=NAME_PATTERN, description="Shown in reasons and reports.")
    url: HttpUrl = Field(description="Health URL of the dependency.")
    timeout: Duration = Field(5.0, description="Timeout of the request.")


class PrometheusDependencySpec(StrictModel):
    """A dependency checked by a Prometheus query."""

    kind: Literal["prometheus"] = Field(description="A Prometheus query within bounds.")
    name: str = Field(pattern=NAME_PATTERN, description="Shown in reasons and reports.")
    url: HttpUrl = Field(description="Base URL of the Prometheus server.")
    query: str = Field(min_length=1, description='PromQL, e.g. up{job="payments"}.')
    min: float | None = Field(None, description="Every value must be at least this (up: 1).")
    max: float | None = Field(None, description="Every value must be at most this.")
    timeout: Duration = Field(5.0, description="Timeout of the query.")

    @model_validator(mode="after")
    def _bounded(self) -> PrometheusDependencySpec:
        if self.min is None and self.max is None:
            raise ValueError("give min and/or max: when is the dependency healthy?")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class HttpDependency:
    """The ``http`` dependency."""

    def __init__(
        self,
        name: str,
        url: str,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._name = name
        self.url = url
        self.timeout = timeout
        self.transport = transport

    @classmethod
    def from_spec(cls, spec: HttpDependencySpec) -> HttpDependency:
        return cls(spec.name, spec.url, spec.timeout)

    @property
    def name(self) -> str:
        return self._name

    def describe(self) -> str:
        return f"{self._name}: {without_credentials(self.url)}"

    def check(self) -> DependencyStatus:
        shown = without_credentials(self.url)
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.get(self.url)
        except httpx.HTTPError as exc:
            return DependencyStatus(self._name, False, f"{shown}: no answer ({type(exc).__name__})")
        return DependencyStatus(
            self._name, response.is_success, f"{shown}: HTTP {response.status_code}"
        )


def judge_values(values: list[float], low: float | None, high: float | None) -> str | None:
    """Why query values mean the dependency is down (None when they say it is up)."""
    if not values:
        return "the query returned no data"
    for value in values:
        if math.isnan(value):
            return "the query returned NaN"
        if low is not None and value < low:
            return f"value {value:g} below {low:g}"
        if high is not None and value > high:
            return f"value {value:g} above {high:g}"
    return None


def _values(result: Any) -> list[float]:
    if isinstance(result, dict) and "value" in result:  # a scalar answer
        return [float(result["value"][1])]
    return [float(series["value"][1]) for series in result]


class PrometheusDependency:
    """The ``prometheus`` dependency."""

    def __init__(
        self,
        name: str,
        url: str,
        query: str,
        low: float | None,
        high: float | None,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._name = name
        self.url = url.rstrip("/")
        self.query = query
        self.low, self.high = low, high
        self.timeout = timeout
        self.transport = transport

    @classmethod
    def from_spec(cls, spec: PrometheusDependencySpec) -> PrometheusDependency:
        return cls(spec.name, spec.url, spec.query, spec.min, spec.max, spec.timeout)

    @property
    def name(self) -> str:
        return self._name

    def describe(self) -> str:
        return f"{self._name}: {self.query} at {without_credentials(self.url)}"

    def check(self) -> DependencyStatus:
        what = f"{self.query}"
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                response = client.get(f"{self.url}/api/v1/query", params={"query": self.query})
            body = response.json()
            if body.get("status") != "success":
                return DependencyStatus(
                    self._name, False, f"{what}: query failed: {body.get('error', body)}"
                )
            values = _values(body["data"]["result"])
        except httpx.HTTPError as exc:
            shown = without_credentials(self.url)
            return DependencyStatus(
                self._name, False, f"{what}: prometheus at {shown} does not answer ({exc})"
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            return DependencyStatus(self._name, False, f"{what}: unreadable answer ({exc})")
        problem = judge_values(values, self.low, self.high)
        if problem is not None:
            return DependencyStatus(self._name, False, f"{what}: {problem}")
        shown_values = ", ".join(f"{v:g}" for v in values[:5])
        return DependencyStatus(self._name, True, f"{what} = {shown_values}")
