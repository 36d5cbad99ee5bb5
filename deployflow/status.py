"""What runs where now (``deployflow status``): per service and environment, the live version and
since when, the split of traffic in words, a deploy in progress, the last outcome and the version
a rollback would return to. A pure function of the tracking database's rows (and, when the spec
is at hand, the router's own state, which has the last word on the split)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from deployflow.manual_rollback import (
    ROLLBACK_STRATEGY,
    PastDeploy,
    last_good,
    live_version,
    manual_headline,
)
from deployflow.providers.base import Instance, RouterState

Row = Mapping[str, Any]


@dataclass(frozen=True)
class InProgress:
    """A deploy (or a rollback) of the service that has not ended."""

    deployment_id: int
    version: str
    strategy: str
    stage: int | None
    weight: int
    flow_run_id: str | None
    run_url: str | None = None
    # A person's rollback asked it to roll back at its next look (who and why).
    rollback_requested: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    environment: str
    live: str | None
    live_since: str | None
    split: str
    in_progress: InProgress | None
    last_outcome: str | None
    last_deployment_id: int | None
    previous_good: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _past(row: Row) -> PastDeploy:
    return PastDeploy(
        row["version"], row["status"], row["strategy"], row["previous_version"], row["id"]
    )


def split_in_words(live: str | None, running: InProgress | None) -> str:
    """Where the tracking database says traffic goes: written before the router is told, so a
    running deploy's weight is at most one step ahead of the router."""
    if live is None and running is None:
        return "nothing recorded serves"
    if running is None or running.weight == 0 or running.strategy == ROLLBACK_STRATEGY:
        return f"all traffic on {live}" if live else f"{running.version if running else '?'}"
    if running.weight >= 100 or live is None:
        return f"all traffic on {running.version} (being verified)"
    return f"{running.weight}% on {running.version}, {100 - running.weight}% on {live}"


def router_split_in_words(state: RouterState, running: Sequence[Instance]) -> str:
    """The router's own split, with its servers named by the versions the target runs there."""
    names = {i.address: i.version for i in running}

    def name(address: str | None) -> str:
        return names.get(address or "", f"an unknown server at {address}") if address else "none"

    if state.stable is None and (state.canary is None or state.canary_weight == 0):
        return "the router sends traffic nowhere (no server enabled)"
    if state.canary is None or state.canary_weight == 0:
        return f"all traffic on {name(state.stable)}"
    if state.canary_weight >= 100:
        return f"all traffic on {name(state.canary)} ({name(state.stable)} ready at 0%)"
    return (
        f"{100 - state.canary_weight}% on {name(state.stable)}, "
        f"{state.canary_weight}% on {name(state.canary)}"
    )


def service_status(
    service: str,
    environment: str,
    rows: Sequence[Row],
    run_url: Any = None,
) -> ServiceStatus:
    """The status of one service in one environment from its rows (``deployment_to_dict``),
    newest first; ``run_url(flow_run_id)`` makes a run's link (None: no link)."""
    real = [r for r in rows if not r["dry_run"]]
    ended = [r for r in real if r["status"] not in ("pending", "running")]
    history = [_past(r) for r in ended]
    live = live_version(history)
    live_since = None
    for r in ended:  # the row that made ``live`` live
        made_live = (r["strategy"] == ROLLBACK_STRATEGY and r["status"] == "rolled_back") or (
            r["strategy"] != ROLLBACK_STRATEGY and r["status"] == "succeeded"
        )
        if made_live:
            live_since = r["finished_at"] or r["started_at"]
            break
    running = None
    unfinished = [r for r in real if r["status"] in ("pending", "running")]
    if unfinished:
        r = unfinished[0]
        asked = (r["details"] or {}).get("rollback_requested")
        running = InProgress(
            r["id"], r["version"], r["strategy"], r["current_stage"], r["canary_weight"],
            r["flow_run_id"], run_url(r["flow_run_id"]) if run_url and r["flow_run_id"] else None,
            manual_headline(str(asked.get("requested_by")), str(asked.get("reason") or ""))
            if isinstance(asked, dict) else None,
        )  # fmt: skip
    last = ended[0] if ended else None
    last_outcome = None
    if last is not None:
        summary = " ".join(str(last["summary"] or "").split())
        what = "rollback of" if last["strategy"] == ROLLBACK_STRATEGY else "deploy of"
        last_outcome = f"{what} {last['version']} {last['status'].replace('_', ' ')}"
        if summary:
            last_outcome += f": {summary[:120]}"
    return ServiceStatus(
        service=service,
        environment=environment,
        live=live,
        live_since=live_since,
        split=split_in_words(live, running),
        in_progress=running,
        last_outcome=last_outcome,
        last_deployment_id=last["id"] if last is not None else None,
        previous_good=last_good(history, live) if live is not None else None,
    )


def status_lines(status: ServiceStatus) -> list[str]:
    """The status for people, a line per fact."""
    since = f" since {status.live_since[:16].replace('T', ' ')} UTC" if status.live_since else ""
    lines = [
        f"{status.service} / {status.environment}",
        f"  live:          {status.live or 'nothing recorded'}{since}",
        f"  traffic:       {status.split}",
    ]
    running = status.in_progress
    if running is not None:
        what = "rollback" if running.strategy == ROLLBACK_STRATEGY else "deploy"
        stage = f"stage {running.stage + 1}, " if running.stage is not None else ""
        link = running.run_url or (f"run {running.flow_run_id}" if running.flow_run_id else "")
        lines.append(
            f"  in progress:   {what} of {running.version} ({stage}{running.weight}% of the "
            f"traffic){': ' + link if link else ''}"
        )
        if running.rollback_requested is not None:
            lines.append(f"                 {running.rollback_requested} (at its next look)")
    if status.last_outcome is not None:
        lines.append(f"  last outcome:  {status.last_outcome}")
        lines.append(f"                 (deployflow report {status.last_deployment_id})")
    lines.append(f"  previous good: {status.previous_good or 'none recorded'}")
    return lines
