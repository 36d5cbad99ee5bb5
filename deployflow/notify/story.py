"""A deploy told as one conversation: the card of its parent message, a line per stage, and the
outcome. Figures are for people: percentages, milliseconds, whole request counts."""

from __future__ import annotations

from collections.abc import Sequence

from deployflow.analysis import Verdict
from deployflow.providers.base import DeployCard
from deployflow.release import ReleaseOutcome
from deployflow.rollout import StageResult


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def deploy_card(
    announcement: str,
    *,
    service: str,
    version: str,
    environment: str,
    strategy: str,
    stages: Sequence[int],
    on_call: str | None,
    dashboard_url: str | None,
    run_url: str | None,
) -> DeployCard:
    """The parent message of a deploy's thread; ``announcement`` is its plain-text fallback."""
    fields = [
        ("Service", _escape(service)),
        ("Version", f"`{_escape(version)}`"),
        ("Environment", _escape(environment)),
        ("Strategy", _escape(strategy)),
    ]
    if stages:
        fields.append(("Stages", " → ".join(f"{w}%" for w in stages)))
    if on_call:
        mention = on_call.startswith("<@") and on_call.endswith(">")
        fields.append(("On-call", on_call if mention else _escape(on_call)))
    links = []
    if dashboard_url:
        links.append(("Dashboard", dashboard_url))
    if run_url:
        links.append(("Prefect run", run_url))
    title = (
        f":rocket: Deploying *{_escape(service)}* `{_escape(version)}` to *{_escape(environment)}*"
    )
    return DeployCard(title=title, fields=tuple(fields), links=tuple(links), text=announcement)


def _figures(stage: StageResult) -> str:
    v = stage.last_values()
    if v["requests"] is None:
        return "no data"
    error_rate = "n/a" if v["error_rate"] is None else f"{v['error_rate']:.2%}"
    p95 = "n/a" if v["p95_seconds"] is None else f"{v['p95_seconds'] * 1000:.0f} ms"
    return f"errors {error_rate}, P95 {p95}, {round(v['requests'])} requests"


def stage_line(stage: StageResult) -> str:
    """One reply per stage, e.g. ``Stage 1 · 5% canary · promoted · errors 0.10%, P95 20 ms,
    342 requests``."""
    verdict = {Verdict.PROMOTE: "promoted", Verdict.ROLLBACK: "*rollback*"}.get(
        stage.verdict, stage.verdict.value
    )
    line = f"Stage {stage.index + 1} · {stage.observed} · {verdict} · {_figures(stage)}"
    if stage.reason is not None and stage.verdict == Verdict.ROLLBACK:
        line += f"\n> {_escape(stage.reason.reason)}"
    return line


_OUTCOME_ICONS = {
    "succeeded": ":white_check_mark:",
    "rolled_back": ":rewind:",
    "failed": ":x:",
    "aborted": ":no_entry:",
}


def outcome_line(outcome: ReleaseOutcome) -> str:
    """The verdict: the reply that closes the thread, and the top of the rewritten parent."""
    status = outcome.status.replace("_", " ")
    if outcome.dry_run and outcome.status == "succeeded":
        status = "dry run done"
    icon = _OUTCOME_ICONS[outcome.status]
    return f"{icon} *{status}*: {_escape(outcome.message)}" if outcome.message else icon
