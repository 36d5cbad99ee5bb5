"""Who is on call, and whether they must confirm before traffic moves.

Every on-call source's spec section shares the confirmation settings (``OnCallSection``):
``confirm`` maps an environment to whether somebody must confirm "I am on call and watching this
release" before the first request reaches the new version, and ``confirm_timeout`` is how long the
deploy waits for it (then it aborts, with nothing started). The ``static`` source names the people
in the spec; ``deployflow.providers.pagerduty`` asks PagerDuty.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from deployflow.providers.base import OnCall, OnCallPerson, OnCallRoster
from deployflow.spec_types import ENVIRONMENT_PATTERN, Duration, StrictModel


class OnCallSection(StrictModel):
    """The confirmation settings every on-call source has."""

    confirm: dict[str, bool] = Field(
        default_factory=dict,
        description="Environments whose deploys wait for somebody to confirm being on call, "
        "e.g. {production: true}; an environment not listed needs no confirmation.",
    )
    confirm_timeout: Duration = Field(
        900.0,
        gt=0,
        description="How long a deploy waits for the confirmation (e.g. 15m); then it aborts "
        "with 'nobody confirmed on call', before any traffic moved.",
    )

    @field_validator("confirm")
    @classmethod
    def _environments(cls, value: dict[str, bool]) -> dict[str, bool]:
        bad = [name for name in value if not re.fullmatch(ENVIRONMENT_PATTERN, name)]
        if bad:
            raise ValueError(
                f"{', '.join(map(repr, bad))}: not an environment name "
                f"(allowed: {ENVIRONMENT_PATTERN})"
            )
        return value

    def confirmation_required(self, environment: str) -> bool:
        """Whether a deploy to ``environment`` waits for somebody to confirm being on call."""
        return self.confirm.get(environment, False)


class StaticOnCallSpec(OnCallSection):
    """The people on call, named in the spec (a Slack handle, a name, an email)."""

    kind: Literal["static"] = Field(description="On-call named in the spec.")
    names: list[str] = Field(
        min_length=1, description="Who is on call, e.g. ['@alice'] or ['<@U024BE7LH>']."
    )

    @field_validator("names")
    @classmethod
    def _not_blank(cls, value: list[str]) -> list[str]:
        if any(not name.strip() for name in value):
            raise ValueError("a name must not be empty")
        return [name.strip() for name in value]


class StaticOnCall:
    """The on-call people the spec names; always answers."""

    def __init__(self, names: list[str]) -> None:
        self.people = tuple(OnCallPerson(name) for name in names)

    @classmethod
    def from_spec(cls, spec: StaticOnCallSpec) -> OnCall:
        return cls(spec.names)

    def current(self) -> OnCallRoster:
        return OnCallRoster(source=self.describe(), people=self.people)

    def describe(self) -> str:
        return "static on-call from the spec"


NOBODY_CONFIRMED = "nobody confirmed on call"


def confirmation_prompt(
    service: str, version: str, environment: str, roster: OnCallRoster | None, timeout: float
) -> str:
    """The markdown shown above the confirmation form (Prefect UI) before traffic moves."""
    on_call = roster.summary if roster is not None else "not configured"
    source = f" (from {roster.source})" if roster is not None else ""
    minutes = f"{timeout / 60:g} min" if timeout >= 60 else f"{timeout:g} s"
    return (
        f"**{service} {version} to {environment}** waits for its on-call engineer.\n\n"
        f"On call now{source}: {on_call}.\n\n"
        f"Tick *watching* and give your name to confirm that you are on call and watching this "
        f"release; nothing has been started yet. Without a confirmation within {minutes} the "
        f"deploy aborts ({NOBODY_CONFIRMED})."
    )
