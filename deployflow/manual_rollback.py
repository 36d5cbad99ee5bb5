"""A person's rollback (``deployflow rollback``, the ``rollback`` deployment): which version to
return to, and when it must be refused. Pure functions of the tracking database's history and the
router's live version; the flow (``flows/manual_rollback.py``) only sequences the steps.

A manual rollback is recorded as a deploy row of the version it rolls *back* (``version``: the bad
one, ``previous_version``: the one it returns to), with the strategy ``rollback`` and the status
``rolled_back``, so it is told, reported and followed up like an automatic rollback; who asked and
why are its trigger and its strategy rationale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from deployflow.schema import SchemaChangeRecord, can_run_with_schema

if TYPE_CHECKING:
    from deployflow.tracking.ledger import Ledger

# The strategy a manual rollback's row is recorded with.
ROLLBACK_STRATEGY = "rollback"
# The trigger's metric of a rollback a person asked for (no measurement decided it).
MANUAL_METRIC = "manual"


@dataclass(frozen=True)
class PastDeploy:
    """One real deploy of the service in the environment, as the tracking database keeps it."""

    version: str
    status: str
    strategy: str = "canary"
    previous_version: str | None = None
    deployment_id: int | None = None

    @property
    def is_manual_rollback(self) -> bool:
        return self.strategy == ROLLBACK_STRATEGY


@dataclass(frozen=True)
class RollbackChoice:
    """The version to return to (``target``), or why there is none (``refusal``)."""

    live: str | None
    target: str | None = None
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.refusal is None and self.target is not None


def live_version(history: Sequence[PastDeploy]) -> str | None:
    """The version the tracking database says serves (``history`` newest first): the last
    succeeded deploy's, or the one the last manual rollback returned to, whichever came later."""
    for past in history:
        if past.is_manual_rollback and past.status == "rolled_back":
            return past.previous_version
        if past.status == "succeeded" and not past.is_manual_rollback:
            return past.version
    return None


def _released(past: PastDeploy) -> tuple[str, ...]:
    """The versions a deploy shows good, newest first: the one it released, then the one that
    served all the traffic before it (a succeeded deploy's previous version; the only record of
    a version that went live before deployflow tracked the service)."""
    if past.status != "succeeded" or past.is_manual_rollback:
        return ()
    return (
        (past.version,) if past.previous_version is None else (past.version, past.previous_version)
    )


def last_good(history: Sequence[PastDeploy], live: str) -> str | None:
    """The last version that completed successfully before ``live`` (``history`` newest first),
    skipping ``live`` and any version a later rollback moved traffic away from (an automatic
    rollback of it, or a person's); a version released again successfully after its rollback
    counts again."""
    rolled_back: set[str] = set()
    for past in history:
        if past.status == "rolled_back":
            rolled_back.add(past.version)
        for version in _released(past):
            if version not in rolled_back | {live}:
                return version
    return None


def known_good(history: Sequence[PastDeploy]) -> list[str]:
    """Every version that completed a release (or served before one that did), newest first,
    once each."""
    seen: list[str] = []
    for past in history:
        seen += [v for v in _released(past) if v not in seen]
    return seen


def choose_version(
    history: Sequence[PastDeploy],
    live: str | None,
    requested: str | None,
    *,
    service: str,
    environment: str,
) -> RollbackChoice:
    """The version a rollback of ``service`` in ``environment`` returns to.

    Args:
        history: The real deploys of the service in the environment, newest first.
        live: The version the router serves now (None: nothing serves).
        requested: The version a person named (``--to``); None: the last good one.
        service: For the messages.
        environment: For the messages.
    """
    where = f"{service} in {environment}"
    if live is None:
        return RollbackChoice(
            None, refusal=f"nothing serves {where}: there is no live version to roll back from"
        )
    if requested is not None:
        if requested == live:
            return RollbackChoice(
                live, refusal=f"{requested} is the live version of {where}: nothing to roll back"
            )
        good = known_good(history)
        if requested not in good:
            listed = ", ".join(v for v in good if v != live)[:300] or "none"
            return RollbackChoice(
                live,
                refusal=(
                    f"{requested} never completed a release of {where} (the tracking database "
                    f"knows: {listed}); roll back to one of those, or release {requested} with "
                    "deployflow deploy"
                ),
            )
        return RollbackChoice(live, target=requested)
    target = last_good(history, live)
    if target is None:
        return RollbackChoice(
            live,
            refusal=(
                f"no version completed a release of {where} before {live} (rolled-back versions "
                "do not count): name one with --to, or release a fix"
            ),
        )
    return RollbackChoice(live, target=target)


SCHEMA_OK = "ok"


def schema_allows(version: str, history: Sequence[SchemaChangeRecord]) -> str:
    """Whether ``version`` can run with the database schema the releases since it left:
    ``"ok"``, or why not (the refusal's words).

    ``history``: the schema changes releases applied (``Ledger.schema_history``, empty for a
    service whose releases do not apply migrations). A change nobody read fully refuses too:
    returning to a version that may not run is not a rollback
    (``deployflow.schema.can_run_with_schema``).
    """
    verdict = can_run_with_schema(version, history)
    return SCHEMA_OK if verdict.ok is True else verdict.reason


def asked_by_a_person(ledger: Ledger, deployment_id: int | None) -> str | None:
    """The headline of a person's rollback asked of the running deploy ``deployment_id``
    (``deployflow rollback`` while it runs), or None: none was asked, there is no row yet, or
    the tracking database does not answer (which is no verdict on the canary)."""
    if deployment_id is None:
        return None
    try:
        return ledger.rollback_requested(deployment_id)
    except Exception:
        return None


def manual_headline(requested_by: str, reason: str) -> str:
    """The trigger's headline of a rollback a person asked for."""
    why = " ".join(reason.split()) or "no reason given"
    return f"rollback asked by {requested_by}: {why}"


KeptAction = Literal["keep", "stop", "live"]


def kept_action(version: str, until: datetime, now: datetime, serving: set[str]) -> KeptAction:
    """What to do with a previous version a release left running (the spec's ``keep_previous``):
    ``live`` when the router sends it traffic again (a rollback returned to it: it is no longer
    a kept version, and must never be stopped as one), ``stop`` once its window has ended,
    ``keep`` inside the window."""
    if version in serving:
        return "live"
    return "stop" if now >= until else "keep"
