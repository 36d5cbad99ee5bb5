"""The release record: what a deploy did, as plain data, and the reports written from it.

``ReleaseOutcome`` is what the flow returns, what ``deployflow deploy --json`` prints and what the
markdown summary and incident report are rendered from, so the three never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from deployflow.analysis import Verdict
from deployflow.providers.base import Instance, Router, Target
from deployflow.rollout import StageResult
from deployflow.verify import VerificationReport

Status = Literal["succeeded", "rolled_back", "failed", "aborted"]
EXIT_CODES: dict[str, int] = {"succeeded": 0, "rolled_back": 3, "failed": 1, "aborted": 1}


def find_stable(router: Router, target: Target) -> Instance | None:
    """The instance the router's stable slot points at, if the target runs it."""
    address = router.state().stable
    if address is None:
        return None
    return next((i for i in target.instances() if i.address == address), None)


@dataclass
class RollbackInfo:
    stage: int | None
    weight: int | None
    metric: str
    value: float | None
    threshold: float | None
    reason: str
    verified: bool = False
    verification: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "weight": self.weight,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
            "verified": self.verified,
        }


@dataclass
class ReleaseOutcome:
    """Everything the deploy decided and measured."""

    service: str
    environment: str
    version: str
    status: Status
    strategy: str
    previous_version: str | None = None
    strategy_rationale: str = ""
    dry_run: bool = False
    baseline_p95_seconds: float | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    verification: list[dict[str, Any]] = field(default_factory=list)
    rollback: RollbackInfo | None = None
    notifications: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""
    flow_run_id: str | None = None
    deployment_id: int | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "service": self.service,
            "environment": self.environment,
            "version": self.version,
            "previous_version": self.previous_version,
            "strategy": self.strategy,
            "strategy_rationale": self.strategy_rationale,
            "dry_run": self.dry_run,
            "baseline_p95_seconds": self.baseline_p95_seconds,
            "stages": [
                {
                    "index": s["index"],
                    "weight": s["weight"],
                    "verdict": s["verdict"],
                    "values": s["values"],
                    "counts": s.get("counts", {}),
                }
                for s in self.stages
            ],
            "checks": self.checks,
            "verification": self.verification,
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "message": self.message,
            "flow_run_id": self.flow_run_id,
            "deployment_id": self.deployment_id,
        }


def stage_trigger(last: StageResult) -> RollbackInfo | None:
    """Why the rollout must roll back after its last stage, or None when that stage promoted."""
    if last.verdict is Verdict.PROMOTE:
        return None
    reason = last.reason
    return RollbackInfo(
        stage=last.index,
        weight=last.weight,
        metric=reason.metric if reason else "analysis",
        value=reason.value if reason else None,
        threshold=reason.threshold if reason else None,
        reason=reason.reason if reason else f"stage verdict {last.verdict.value}",
    )


def verification_trigger(report: VerificationReport) -> RollbackInfo | None:
    """Why post-deploy verification rolls the release back, or None when it passed."""
    failure = report.first_failure
    if failure is None:
        return None
    return RollbackInfo(
        stage=None,
        weight=100,
        metric=failure.metric or failure.name,
        value=failure.value,
        threshold=failure.threshold,
        reason=f"post-deploy verification failed: {failure.name}: {failure.detail}",
    )


def blocking_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Step 1 and 2 results that stop the deploy: failed or errored (advisory ones never do)."""
    return [c for c in checks if c["status"] in ("failed", "error")]


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "error_rate":
        return f"{value:.2%}"
    if kind in ("p95_seconds", "p95_latency"):
        return f"{value * 1000:.1f} ms"
    return f"{value:g}"


def summary_markdown(outcome: ReleaseOutcome) -> str:
    """The deploy summary artifact."""
    icon = {"succeeded": "✅", "rolled_back": "↩️", "failed": "❌", "aborted": "⛔"}[outcome.status]
    lines = [
        f"# {icon} {outcome.service} {outcome.version} → {outcome.environment}: "
        f"{outcome.status.replace('_', ' ')}",
        "",
        f"- Strategy: **{outcome.strategy}** ({outcome.strategy_rationale})",
        f"- Previous version: {outcome.previous_version or 'none'}",
        "- Baseline P95 of the stable version: "
        + _fmt(outcome.baseline_p95_seconds, "p95_seconds"),
    ]
    if outcome.dry_run:
        lines.append("- Dry run: nothing was started and no traffic moved")
    if outcome.message:
        lines += ["", outcome.message]
    if outcome.checks:
        lines += ["", "## Checks", "", "| step | check | status | detail |", "|---|---|---|---|"]
        for c in outcome.checks:
            detail = str(c.get("detail", "")).replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {c['step']} | {c['name']} | {c['status']} | {detail} |")
    if outcome.stages:
        lines += [
            "",
            "## Stages",
            "",
            "| stage | canary weight | verdict | error rate | P95 | requests | measurements |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in outcome.stages:
            v = s["values"]
            counts = ", ".join(f"{k} {n}" for k, n in s.get("counts", {}).items() if n)
            lines.append(
                f"| {s['index'] + 1} | {s['weight']}% | {s['verdict']} | "
                f"{_fmt(v['error_rate'], 'error_rate')} | {_fmt(v['p95_seconds'], 'p95_seconds')} "
                f"| {_fmt(v['requests'], 'requests')} | {counts} |"
            )
    if outcome.verification:
        lines += ["", "## Verification", "", "| check | ok | detail |", "|---|---|---|"]
        for c in outcome.verification:
            lines.append(f"| {c['name']} | {'yes' if c['ok'] else '**no**'} | {c['detail']} |")
    if outcome.rollback:
        r = outcome.rollback
        lines += [
            "",
            "## Rollback",
            "",
            f"Rolled back at stage {'n/a' if r.stage is None else r.stage + 1}"
            f" ({r.weight if r.weight is not None else 'n/a'}% canary): {r.reason}.",
            f"Stable verified healthy afterwards: {'yes' if r.verified else '**no**'}.",
        ]
    return "\n".join(lines) + "\n"


def incident_markdown(outcome: ReleaseOutcome) -> str:
    """The incident report artifact written when a rollback happened."""
    r = outcome.rollback
    if r is None:
        raise ValueError("no rollback happened, so there is no incident to report")
    ev = r.evidence
    lines = [
        f"# Incident: {outcome.service} {outcome.version} rolled back in {outcome.environment}",
        "",
        "## What happened",
        "",
        f"- Trigger: **{r.metric}** = {_fmt(r.value, r.metric)} against the threshold "
        f"{_fmt(r.threshold, r.metric)}",
        f"- Stage: {'n/a' if r.stage is None else r.stage + 1} "
        f"({r.weight if r.weight is not None else 'n/a'}% of traffic on the canary)",
        f"- Reason: {r.reason}",
        f"- Traffic restored to: {outcome.previous_version or 'n/a'}",
        f"- Stable verified after rollback: {'yes' if r.verified else '**NO: investigate now**'}",
        "",
        "## Verification of the stable version",
        "",
    ]
    for c in r.verification:
        lines.append(f"- {'✅' if c['ok'] else '❌'} {c['name']}: {c['detail']}")
    lines += ["", "## Evidence for the root cause", ""]
    measurements = ev.get("last_measurements", [])
    if measurements:
        lines += ["| outcome | error rate | P95 | requests | note |", "|---|---|---|---|---|"]
        for m in measurements:
            lines.append(
                f"| {m['outcome']} | {_fmt(m['error_rate'], 'error_rate')} | "
                f"{_fmt(m['p95_seconds'], 'p95_seconds')} | {_fmt(m['requests'], 'requests')} | "
                f"{m.get('note', '')} |"
            )
    if ev.get("router_before"):
        lines += ["", f"Router before rollback: `{ev['router_before']}`"]
    if ev.get("router_after"):
        lines += [f"Router after rollback: `{ev['router_after']}`"]
    if ev.get("canary_log_tail"):
        lines += ["", "Canary log tail:", "", "```", ev["canary_log_tail"], "```"]
    lines += [
        "",
        "## Follow-up",
        "",
        "- [ ] Reproduce the failure against the canary build",
        "- [ ] Add a check that would have caught it before traffic",
        "- [ ] Decide whether the rollback thresholds fit this service",
    ]
    return "\n".join(lines) + "\n"
