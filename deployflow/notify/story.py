"""The words of a deploy's story: the card of its thread's parent message, a line per stage, a
rollback notice, the outcome, and the run log's line for each event (``deployflow.story``). Figures
come from ``deployflow.figures``; Slack lines use mrkdwn, log lines are plain text."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from deployflow.analysis import Verdict
from deployflow.figures import duration, values_figures
from deployflow.notify.slack import format_deploy_announcement
from deployflow.providers.base import DeployCard
from deployflow.release import ReleaseOutcome, stage_trigger
from deployflow.rollout import StageResult
from deployflow.story import (
    Announced,
    Answered,
    Deploy,
    Ended,
    FlagChanged,
    Paused,
    RollbackVerified,
    RolledBack,
    SchemaSettled,
    StageBegan,
    StageEnded,
    Started,
    StoryEvent,
)


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


def stage_line(stage: StageResult) -> str:
    """One reply per stage, e.g. ``Stage 1 · 5% canary · promoted · errors 0.10%, P95 20 ms,
    342 requests``. A stage that rolls back leads with its trigger in words (a canary stage's
    line within ``HEADLINE_WORDS``), then its figures once; the analysis's full statistics are
    the incident report's."""
    figures = values_figures(stage.last_values())
    if stage.verdict is Verdict.ROLLBACK:
        trigger = stage_trigger(stage)
        why = trigger.headline if trigger is not None else "no reason recorded"
        return (
            f"Stage {stage.index + 1} · {stage.observed} · *rollback*: {_escape(why)}\n> {figures}"
        )
    verdict = "promoted" if stage.verdict is Verdict.PROMOTE else stage.verdict.value
    return f"Stage {stage.index + 1} · {stage.observed} · {verdict} · {figures}"


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
    if not outcome.message:
        return icon
    message = _escape(outcome.message)
    if message.startswith(status):  # "rolled back to v1: ...": the status once
        return f"{icon} *{status}*{message[len(status) :]}"
    return f"{icon} *{status}*: {message}"


def report_pointer(outcome: ReleaseOutcome) -> str | None:
    """Where the incident report of a deploy that rolled back (or whose rollback failed) is read
    once the run is gone: ``deployflow report ID`` (the tracking id); None for the others (an
    interrupted or refused deploy has no report)."""
    if outcome.deployment_id is None or outcome.dry_run or outcome.rollback is None:
        return None  # only a rollback (done or failed) has an incident report
    return f"Incident report: `deployflow report {outcome.deployment_id}`"


def announcement(event: Announced, deploy: Deploy) -> str:
    """The parent message's text (and the announcement of a notifier without threads)."""
    return format_deploy_announcement(
        deploy.service,
        deploy.version,
        deploy.environment,
        event.rationale or event.strategy,
        stages=event.steps,
        on_call=event.on_call,
        dashboard_url=event.dashboard_url,
        risk_factors=event.risk_factors,
    )


def card(event: Announced, deploy: Deploy) -> DeployCard:
    return deploy_card(
        announcement(event, deploy),
        service=deploy.service,
        version=deploy.version,
        environment=deploy.environment,
        strategy=event.strategy,
        stages=event.steps,
        on_call=event.on_call,
        dashboard_url=event.dashboard_url,
        run_url=event.run_url,
    )


def rollback_line(event: RolledBack, deploy: Deploy | None) -> str:
    """The rollback notice: a headline naming the trigger with its figure and limit."""
    what = f"{deploy.service} {deploy.version}" if deploy is not None else "the new version"
    if event.error is not None:
        return (
            f":rotating_light: {_escape(what)}: ROLLBACK FAILED: {_escape(event.error)}. "
            f"Trigger: {_escape(event.trigger.headline)}"
        )
    return (
        f":rewind: {_escape(what)} rolled back to {_escape(event.restored_to)}: "
        f"{_escape(event.trigger.headline)}\n> All traffic is on {_escape(event.restored_to)}; "
        "checking it and gathering the evidence"
    )


def verified_line(event: RollbackVerified) -> str:
    """The check of the stable version after a rollback, as a reply in the thread."""
    if event.ok:
        return (
            f":white_check_mark: {_escape(event.restored_to)} verified healthy after the rollback"
        )
    failed = ", ".join(event.failed) or "its checks"
    return (
        f":warning: {_escape(event.restored_to)} is *NOT* healthy after the rollback "
        f"({_escape(failed)} failed): investigate now"
    )


def schema_line(event: SchemaSettled) -> str:
    """What became of the release's schema after the rollback."""
    icon = {"kept": ":card_index:", "downgraded": ":rewind:"}.get(event.status, ":warning:")
    return f"{icon} schema {event.status}: {_escape(event.message)}"


def flag_line(event: FlagChanged) -> str:
    if event.percent == 0:
        on = f" on {event.version}" if event.version else ""
        return f":no_entry: feature flag {event.flag} turned off for everyone{on}: {event.reason}"
    return f"Feature flag {event.flag} on for {event.percent}% of users"


def paused_line(event: Paused) -> str:
    return f":hourglass: waiting up to {duration(event.timeout_seconds)}: {event.question}"


def answered_line(event: Answered) -> str:
    if event.refusal is not None:
        return f":no_entry: {event.gate}: {event.refusal}"
    return f":white_check_mark: {event.gate}: answered by {event.by or 'somebody'}"


def ended_text(outcome: ReleaseOutcome) -> str:
    """The outcome in plain words: ``v2 rolled back: rolled back to v1: error rate ...``."""
    status = outcome.status.replace("_", " ")
    return f"{outcome.version} {status}: {outcome.message}" if outcome.message else status


def log_line(event: StoryEvent, deploy: Deploy | None) -> tuple[int, str] | None:
    """What the run log says of an event (level, plain text), or None for nothing."""
    if isinstance(event, Started):
        d = event.deploy
        live = d.previous_version or "nothing"
        return logging.INFO, f"deploy of {d.service} {d.version} to {d.environment} ({live} live)"
    if isinstance(event, Announced):
        steps = " → ".join(f"{w}%" for w in event.steps)
        on_call = event.on_call or "nobody named in notifications.on_call"
        return (
            logging.INFO,
            f"plan: {event.strategy} {steps} ({event.rationale}); on call: {on_call}",
        )
    if isinstance(event, StageBegan):
        return None  # set-traffic logs the router's state itself
    if isinstance(event, StageEnded):
        stage = event.stage
        verdict = {Verdict.PROMOTE: "promoted", Verdict.ROLLBACK: "rollback"}.get(
            stage.verdict, stage.verdict.value
        )
        level = logging.INFO if stage.verdict is Verdict.PROMOTE else logging.WARNING
        line = f"stage {stage.index + 1} ({stage.observed}) {verdict}: "
        return level, line + values_figures(stage.last_values())
    if isinstance(event, Paused):
        return logging.WARNING, f"waiting up to {duration(event.timeout_seconds)} for {event.gate}"
    if isinstance(event, Answered):
        if event.refusal is not None:
            return logging.WARNING, f"{event.gate}: {event.refusal}"
        return logging.INFO, f"{event.gate}: answered by {event.by or 'somebody'}"
    if isinstance(event, FlagChanged):
        level = logging.WARNING if event.percent == 0 else logging.INFO
        return level, f"flag {event.flag} at {event.percent}%: {event.reason}"
    if isinstance(event, RolledBack):
        if event.error is not None:
            return logging.ERROR, f"ROLLBACK FAILED: {event.error}"
        return logging.WARNING, f"rolled back to {event.restored_to}: {event.trigger.headline}"
    if isinstance(event, RollbackVerified):
        if event.ok:
            return logging.INFO, f"{event.restored_to} verified healthy after the rollback"
        failed = ", ".join(event.failed) or "its checks"
        return logging.ERROR, (
            f"{event.restored_to} is NOT healthy after the rollback ({failed} failed)"
        )
    if isinstance(event, SchemaSettled):
        level = logging.INFO if event.status in ("kept", "downgraded") else logging.WARNING
        return level, f"schema {event.status}: {event.message}"
    if isinstance(event, Ended):
        return logging.INFO, ended_text(event.outcome)
    return None
