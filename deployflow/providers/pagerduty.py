"""Who is on call, from PagerDuty's REST API v2 (``GET /oncalls``).

The API token comes from a PagerDuty block saved in Prefect, or, as the documented fallback for
machines without blocks, from ``DEPLOYFLOW_PAGERDUTY_TOKEN``; never from the spec. Asking is an
observation: an unreachable PagerDuty, a refused token or a rate limit that outlasts our patience
becomes ``OnCallRoster.error``, and the deploy decides what that means (with confirmation required,
a person still has to confirm by name).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, model_validator

from deployflow.providers.base import (
    BackendConfigError,
    BuildContext,
    OnCall,
    OnCallPerson,
    OnCallRoster,
)
from deployflow.providers.oncall import OnCallSection
from deployflow.spec_types import HttpUrl

TOKEN_ENV = "DEPLOYFLOW_PAGERDUTY_TOKEN"
PAGERDUTY_BLOCK_TYPE = "pagerduty"
PAGERDUTY_API = "https://api.pagerduty.com"
_PAGE_SIZE = 100  # PagerDuty's largest page


class PagerDutyOnCallSpec(OnCallSection):
    """On-call from PagerDuty: the first escalation level of the named schedules or policies."""

    kind: Literal["pagerduty"] = Field(description="PagerDuty REST API v2, GET /oncalls.")
    schedule_ids: list[str] = Field(
        default_factory=list, description="PagerDuty schedule ids, e.g. ['PABC123']."
    )
    escalation_policy_ids: list[str] = Field(
        default_factory=list, description="PagerDuty escalation policy ids, e.g. ['PXYZ789']."
    )
    block: str | None = Field(
        None,
        min_length=1,
        description="Name of the deployflow PagerDuty block holding the API token; empty: "
        f"the {TOKEN_ENV} environment variable.",
    )
    base_url: HttpUrl | None = Field(
        None, description=f"PagerDuty REST API base URL (default {PAGERDUTY_API})."
    )

    @model_validator(mode="after")
    def _something_to_ask(self) -> PagerDutyOnCallSpec:
        if not self.schedule_ids and not self.escalation_policy_ids:
            raise ValueError("name schedule_ids or escalation_policy_ids (or both)")
        return self


class PagerDutyOnCall:
    """Asks PagerDuty who is on call now (escalation level 1) for some schedules or policies.

    Args:
        token: PagerDuty REST API key.
        schedule_ids: Schedules to ask about.
        escalation_policy_ids: Escalation policies to ask about.
        base_url: REST API base URL; tests pass ``deployflow.fakes.pagerduty_api``'s.
        transport: httpx transport; None is the network.
        timeout: Seconds per request.
        max_rate_limit_wait: Longest ``Retry-After`` honoured; a longer one is an error at once.
        rate_limit_retries: How many 429 answers are waited out per page.
        sleep: How to wait out a 429 (tests pass a recorder).
    """

    def __init__(
        self,
        token: SecretStr,
        schedule_ids: Sequence[str] = (),
        escalation_policy_ids: Sequence[str] = (),
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        max_rate_limit_wait: float = 30.0,
        rate_limit_retries: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not schedule_ids and not escalation_policy_ids:
            raise ValueError("schedule_ids or escalation_policy_ids: name at least one")
        self.schedule_ids = list(schedule_ids)
        self.escalation_policy_ids = list(escalation_policy_ids)
        self.base_url = (base_url or PAGERDUTY_API).rstrip("/")
        self._token = token
        self._transport = transport
        self._timeout = timeout
        self._max_wait = max_rate_limit_wait
        self._retries = rate_limit_retries
        self._sleep = sleep

    @classmethod
    def from_spec(cls, spec: PagerDutyOnCallSpec, ctx: BuildContext) -> OnCall:
        """The source a spec's ``kind: pagerduty`` section describes.

        Raises:
            BackendConfigError: No token: neither a block nor ``DEPLOYFLOW_PAGERDUTY_TOKEN``.
        """
        if spec.block is not None:
            block = ctx.load_block(PAGERDUTY_BLOCK_TYPE, spec.block, "notifications.on_call.block")
            source: OnCall = block.get_client(
                spec.schedule_ids, spec.escalation_policy_ids, base_url=spec.base_url
            )
            return source
        token = ctx.env.get(TOKEN_ENV, "").strip()
        if not token:
            raise BackendConfigError(
                "notifications.on_call: the pagerduty source has no token: save a PagerDuty "
                f"block and name it in 'block', or set {TOKEN_ENV} where the flow runs"
            )
        return cls(
            SecretStr(token),
            spec.schedule_ids,
            spec.escalation_policy_ids,
            base_url=spec.base_url,
        )

    def describe(self) -> str:
        asked = []
        if self.schedule_ids:
            asked.append("schedules " + ",".join(self.schedule_ids))
        if self.escalation_policy_ids:
            asked.append("escalation policies " + ",".join(self.escalation_policy_ids))
        return "pagerduty " + "; ".join(asked)

    def __repr__(self) -> str:
        return f"PagerDutyOnCall({self.describe()!r}, base_url={self.base_url!r})"

    def current(self) -> OnCallRoster:
        """The first escalation level on call now; never raises."""
        try:
            oncalls = self._all_oncalls()
        except _Unanswered as exc:
            return OnCallRoster(source=self.describe(), error=self._scrub(str(exc)))
        except httpx.HTTPError as exc:
            error = f"cannot reach PagerDuty at {self.base_url}: {type(exc).__name__}: {exc}"
            return OnCallRoster(source=self.describe(), error=self._scrub(error))
        people: dict[str, OnCallPerson] = {}
        for oncall in oncalls:
            if oncall.get("escalation_level") not in (None, 1):
                continue  # level 2 and beyond are who gets paged next, not who is watching
            user = oncall.get("user") or {}
            key = str(user.get("id") or user.get("summary"))
            name = user.get("name") or user.get("summary")
            if name and key not in people:
                people[key] = OnCallPerson(str(name), user.get("email"))
        return OnCallRoster(source=self.describe(), people=tuple(people.values()))

    def _scrub(self, message: str) -> str:
        secret = self._token.get_secret_value()
        return message.replace(secret, "***") if secret else message

    def _all_oncalls(self) -> list[dict[str, Any]]:
        headers = {
            "Authorization": f"Token token={self._token.get_secret_value()}",
            "Accept": "application/vnd.pagerduty+json;version=2",
        }
        found: list[dict[str, Any]] = []
        with httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=self._timeout,
            transport=self._transport,
        ) as client:
            offset = 0
            while True:
                page = self._page(client, offset)
                batch = page.get("oncalls") or []
                found.extend(batch)
                if not page.get("more") or not batch:
                    return found
                offset += len(batch)

    def _page(self, client: httpx.Client, offset: int) -> dict[str, Any]:
        params: list[tuple[str, str | int | float | bool | None]] = [
            *(("schedule_ids[]", s) for s in self.schedule_ids),
            *(("escalation_policy_ids[]", p) for p in self.escalation_policy_ids),
            ("include[]", "users"),
            ("limit", _PAGE_SIZE),
            ("offset", offset),
        ]
        for attempt in range(self._retries + 1):
            response = client.get("/oncalls", params=params)
            if response.status_code != 429:
                break
            wait = _retry_after(response)
            if wait is None or wait > self._max_wait or attempt == self._retries:
                shown = "no Retry-After" if wait is None else f"Retry-After {wait:g}s"
                raise _Unanswered(f"PagerDuty rate limited the on-call lookup (429, {shown})")
            self._sleep(wait)
        if response.status_code == 401:
            raise _Unanswered(
                "PagerDuty rejected the API token (401 Unauthorized): check the token in the "
                f"PagerDuty block or {TOKEN_ENV}"
            )
        if response.status_code == 403:
            raise _Unanswered(
                "PagerDuty refused the on-call lookup (403 Forbidden): the API key cannot read "
                "on-calls for these schedules or policies"
            )
        if response.status_code >= 400:
            raise _Unanswered(
                f"PagerDuty answered HTTP {response.status_code} to GET /oncalls: "
                f"{_error_message(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise _Unanswered("PagerDuty answered GET /oncalls with something not JSON") from None
        if not isinstance(body, dict):
            raise _Unanswered("PagerDuty answered GET /oncalls with something not an object")
        return body


class _Unanswered(Exception):
    """PagerDuty answered, but not with on-calls; the message is for people."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After") or response.headers.get("ratelimit-reset")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error") or {}
        return str(error.get("message") or "no error message")
    except (ValueError, AttributeError):
        return "no error message"
