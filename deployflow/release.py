"""The release record: what a deploy did, typed end to end, and the reports written from it.

``ReleaseOutcome`` is what the flow returns, what ``deployflow deploy --json`` prints and what the
tracking database records (``Ledger.record_outcome``); the summary and the incident report are
rendered from that record as the database keeps it (``deployflow.notify.report``), so none of
them disagree. Dicts appear only at those boundaries (``to_dict``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from deployflow.analysis import Measurement, Verdict
from deployflow.checks.result import BLOCKING, CheckResult, CheckStatus
from deployflow.error_words import in_words
from deployflow.figures import (
    TRIGGER_WORDS,
    limit_percent,
    percent,
    requests,
    shorten,
    trigger_headline,
)
from deployflow.providers.base import Instance, NotificationResult, Router, RouterState, Target
from deployflow.rollout import StageResult
from deployflow.verify import VerificationReport

Status = Literal["succeeded", "rolled_back", "failed", "aborted"]
Step = Literal["pre_checks", "migrations"]
EXIT_CODES: dict[str, int] = {"succeeded": 0, "rolled_back": 3, "failed": 1, "aborted": 1}


def service_named(service_block: object, spec_path: str | None) -> str:
    """The service a deploy's parameters name, for its run name: the block's spec's ``service``,
    else the spec file's, else the file's name; never raises (a run name must not fail a run,
    whose own step 0 reports a bad spec)."""
    import yaml

    text = (
        service_block.get("spec")
        if isinstance(service_block, dict)
        else getattr(service_block, "spec", None)
    )
    try:
        if not isinstance(text, str) and spec_path:
            with open(spec_path, encoding="utf-8") as file:
                text = file.read(1024 * 1024)
        data = yaml.safe_load(text) if isinstance(text, str) else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    name = data.get("service") if isinstance(data, dict) else None
    if isinstance(name, str) and name.strip():
        return name.strip()[:64]
    if spec_path:
        return os.path.basename(spec_path)[:64]
    return "(no service chosen)"


def run_name(service_block: object, spec_path: str | None, version: str, environment: str) -> str:
    """``deploy <service> <version> to <environment>``."""
    return f"deploy {service_named(service_block, spec_path)} {version} to {environment}"


def find_stable(router: Router, target: Target) -> Instance | None:
    """The instance the router's stable slot points at, if the target runs it."""
    address = router.state().stable
    if address is None:
        return None
    return next((i for i in target.instances() if i.address == address), None)


@dataclass(frozen=True)
class CheckRecord:
    """One gate of step 1 or 2 as the release records it."""

    step: Step
    name: str
    status: CheckStatus
    detail: str
    figure: str = ""
    reason: str = ""
    duration_seconds: float | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def blocks(self) -> bool:
        """True when this result stops the deploy (failed or error; advisory ones never do)."""
        return self.status in BLOCKING

    @classmethod
    def from_check(cls, step: Step, result: CheckResult) -> CheckRecord:
        details = {**result.details, "required": result.required}
        details["output_tail"] = result.output_tail
        return cls(
            step=step,
            name=result.name,
            status=result.status,
            detail=" ".join(x for x in (result.figure, result.reason) if x) or result.status.value,
            figure=result.figure,
            reason=result.reason,
            duration_seconds=result.duration_seconds,
            details=details,
        )

    @classmethod
    def skipped(cls, step: Step, name: str, reason: str) -> CheckRecord:
        return cls(step, name, CheckStatus.SKIPPED, reason, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "figure": self.figure,
            "reason": self.reason,
            "duration_seconds": self.duration_seconds,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Trigger:
    """Why a release is rolled back: which stage, which metric, against which threshold.

    ``headline`` says it in about 20 words with its figure and limit ("error rate 11.3% over 60
    requests, above the 5% limit"); ``reason`` keeps the analysis's full statistics.
    """

    stage: int | None
    weight: int | None
    metric: str
    value: float | None
    threshold: float | None
    reason: str
    requests: float | None = None
    headline: str = ""

    def __post_init__(self) -> None:
        if not self.headline:
            count = self.requests if self.metric == "error_rate" else None
            headline = trigger_headline(
                self.metric, self.value, self.threshold, count=count, detail=self.reason
            )
            object.__setattr__(self, "headline", headline)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "weight": self.weight,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "reason": self.reason,
            "requests": self.requests,
            "headline": self.headline,
        }


@dataclass(frozen=True)
class RollbackEvidence:
    """What the rollback gathered for the root cause. ``problems`` says what could not be had."""

    # Where the deploy had put traffic when the trigger fired (what the rollback undid).
    traffic_at_trigger: RouterState | None = None
    router_after: RouterState | None = None
    canary_log_tail: str = ""
    last_measurements: tuple[Measurement, ...] = ()
    problems: tuple[str, ...] = ()
    # A failed restore's raw error chain, redacted, for engineers (people read ``error``).
    error_detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "traffic_at_trigger": str(self.traffic_at_trigger) if self.traffic_at_trigger else None,
            "router_after": str(self.router_after) if self.router_after else None,
            "canary_log_tail": self.canary_log_tail,
            "last_measurements": [m.to_dict() for m in self.last_measurements],
            "problems": list(self.problems),
            "error_detail": self.error_detail or None,
        }


@dataclass(frozen=True)
class RollbackRecord:
    """A rollback: its trigger, the verification of the restored version, the evidence.

    ``error`` is set when the rollback itself failed (traffic may not be on stable).
    ``restore_seconds`` is the time from the restore call to the router confirming all traffic
    on stable (for blue-green: the switch back).
    """

    trigger: Trigger
    verification: VerificationReport | None = None
    evidence: RollbackEvidence = field(default_factory=RollbackEvidence)
    error: str | None = None
    restore_seconds: float | None = None

    @property
    def verified(self) -> bool:
        """The restored version was verified healthy."""
        return self.error is None and self.verification is not None and self.verification.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.trigger.to_dict(),
            "verified": self.verified,
            "error": self.error,
            "restore_seconds": self.restore_seconds,
        }


class ReleaseNotSucceeded(Exception):
    """The result of a deploy run that did not succeed; ``outcome`` is the release as a dict.

    A run that rolled back, was refused or failed ends Failed, and Prefect resolves a failed
    state's result into an exception (anything else is a TypeError in the run's log): this one
    says what happened and still carries the whole outcome for the CLI and the API.
    """

    def __init__(self, outcome: Mapping[str, Any]) -> None:
        self.outcome = dict(outcome)
        super().__init__(
            f"{self.outcome.get('version')} {self.outcome.get('status')}: "
            f"{self.outcome.get('message')}"
        )

    def __reduce__(self) -> tuple[type[ReleaseNotSucceeded], tuple[dict[str, Any]]]:
        return (type(self), (self.outcome,))


def outcome_of(result: object) -> dict[str, Any] | None:
    """The outcome dict a deploy run's result holds (succeeded or not); None if it holds none."""
    if isinstance(result, dict):
        return result
    if isinstance(result, ReleaseNotSucceeded):
        return result.outcome
    return None


# How each outcome reads in Prefect's run list: the state name (the type stays Completed or
# Failed, so the colours and filters people know keep working).
STATE_NAMES: dict[str, str] = {
    "succeeded": "Completed",
    "dry_run": "DryRun",
    "rolled_back": "RolledBack",
    "aborted": "Aborted",
    "failed": "Failed",
    "rollback_failed": "RollbackFailed",
}


def state_name(outcome: ReleaseOutcome) -> str:
    """The Prefect state name of a finished release (see ``STATE_NAMES``)."""
    if outcome.status == "succeeded":
        return STATE_NAMES["dry_run" if outcome.dry_run else "succeeded"]
    if outcome.rollback is not None and outcome.rollback.error is not None:
        return STATE_NAMES["rollback_failed"]
    return STATE_NAMES[outcome.status]


@dataclass
class ReleaseOutcome:
    """Everything the deploy decided and measured."""

    service: str
    environment: str
    version: str
    status: Status = "aborted"
    strategy: str = "pending"
    previous_version: str | None = None
    strategy_rationale: str = ""
    # The risk table the strategy was chosen with: {"explanation", "score", "level", "factors"}.
    strategy_factors: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    baseline_p95_seconds: float | None = None
    # Blue-green: seconds from the switch decision to the router reporting 100% on green.
    switch_seconds: float | None = None
    # Feature flag changes the release made: {"flag", "percent", "reason"}, in order.
    flag_changes: list[dict[str, Any]] = field(default_factory=list)
    stages: list[StageResult] = field(default_factory=list)
    checks: list[CheckRecord] = field(default_factory=list)
    verification: VerificationReport | None = None
    rollback: RollbackRecord | None = None
    notifications: list[NotificationResult] = field(default_factory=list)
    reconciled: list[str] = field(default_factory=list)
    message: str = ""
    git_ref: str | None = None
    # When the commit ``git_ref`` names was made (the start of the lead time for changes).
    commit_at: datetime | None = None
    flow_run_id: str | None = None
    deployment_id: int | None = None
    # When the deploy began (its row was created): the start of its dashboard time range.
    started_at: datetime | None = None
    # The previous version left running after a success (the spec's keep_previous) and until
    # when: (version, until).
    kept_previous: tuple[str, datetime] | None = None
    # The schema change the release applied (migrations.apply): {"id", "before", "after",
    # "range" (deployflow.schema.SchemaRange.to_dict()), "command", "status", "detail"}.
    schema: dict[str, Any] | None = None
    # A run stopped by a signal (Ctrl-C, SIGTERM, a cancellation): {"signal", "traffic_restored"
    # (True, False, or None when unknown), "serving" (the version known to have all the traffic,
    # or None)}; None when no signal stopped it.
    interruption: dict[str, Any] | None = None
    # From step 5 on, the new version may run and take traffic (an interruption then puts
    # traffic back); before it, nothing was started.
    started_new_version: bool = False

    def require_id(self) -> int:
        """The tracking row's id, which every step after the start needs."""
        if self.deployment_id is None:
            raise RuntimeError("the deploy has no tracking row yet")
        return self.deployment_id

    def rationale_dict(self) -> dict[str, Any]:
        """Why this strategy: the one-sentence explanation and every risk factor's contribution."""
        empty: dict[str, Any] = {"score": None, "level": None, "factors": []}
        return {**empty, **self.strategy_factors, "explanation": self.strategy_rationale}

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
            "strategy_rationale": self.rationale_dict(),
            "dry_run": self.dry_run,
            "baseline_p95_seconds": self.baseline_p95_seconds,
            "switch_seconds": self.switch_seconds,
            "flag_changes": self.flag_changes,
            "stages": [
                {
                    "index": s.index,
                    "weight": s.weight,
                    "verdict": s.verdict.value,
                    "explanation": s.explanation,
                    "values": s.last_values(),
                    "counts": s.counts,
                    "started_at": s.started_at.isoformat(),
                    "finished_at": s.finished_at.isoformat(),
                }
                for s in self.stages
            ],
            "checks": [c.to_dict() for c in self.checks],
            "verification": (
                [c.to_dict() for c in self.verification.checks] if self.verification else []
            ),
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "notifications": [
                {"channel": n.channel, "ok": n.ok, "detail": n.detail} for n in self.notifications
            ],
            "reconciled": self.reconciled,
            "message": self.message,
            "git_ref": self.git_ref,
            "flow_run_id": self.flow_run_id,
            "deployment_id": self.deployment_id,
            "schema": self.schema,
            "interruption": self.interruption,
        }


def stage_trigger(last: StageResult, max_error_rate: float | None = None) -> Trigger | None:
    """Why the rollout must roll back after its last stage, or None when that stage promoted.

    The headline quotes the stage's last measured figures: a stage stopped for too little
    evidence (the futility rule, a hold that ran out) still says what it saw against the error
    rate limit (``max_error_rate``), rather than "n/a"."""
    if last.verdict is Verdict.PROMOTE:
        return None
    reason = last.reason
    seen = last.last_values()
    metric = reason.metric if reason else "analysis"
    headline = ""
    if reason is not None and reason.value is None and seen["requests"] is not None:
        headline = _unproven_headline(seen, max_error_rate, reason.metric)
    return Trigger(
        stage=last.index,
        weight=last.weight,
        metric=metric,
        value=reason.value if reason else None,
        threshold=reason.threshold if reason else None,
        reason=reason.reason if reason else f"stage verdict {last.verdict.value}",
        requests=seen["requests"],
        headline=headline,
    )


def _unproven_headline(seen: Mapping[str, float | None], limit: float | None, metric: str) -> str:
    """A stage judged without a breach (shown neither healthy nor harmful in its time, failed
    queries), in the figures it last measured: doubt, never called harm."""
    rate, count = seen["error_rate"], seen["requests"]
    figures = f"error rate {percent(rate)} over {requests(count)}"
    if metric == "inconclusive" and limit is not None and rate is not None:
        if rate > limit:
            return f"{figures}, above the {limit_percent(limit)} limit, not beyond doubt"
        return f"{figures}: not shown below the {limit_percent(limit)} limit"
    if metric == "inconclusive":
        return f"{figures}: not shown healthy in time"
    return ""


def verification_trigger(report: VerificationReport) -> Trigger | None:
    """Why post-deploy verification rolls the release back, or None when it passed."""
    failure = report.first_failure
    if failure is None:
        return None
    metric = failure.metric or failure.name
    if failure.value is None:
        what = f"{failure.name}: {failure.detail}"
    else:  # the figure names its metric
        what = trigger_headline(metric, failure.value, failure.threshold)
    headline = shorten(f"post-deploy verification failed: {what}", TRIGGER_WORDS)
    return Trigger(
        stage=None,
        weight=100,
        metric=metric,
        value=failure.value,
        threshold=failure.threshold,
        reason=f"post-deploy verification failed: {failure.name}: {failure.detail}",
        headline=headline,
    )


def step_failed_trigger(what: str, error: BaseException | str) -> Trigger:
    """A step of the rollout broke (a backend refused, a bug): roll back, the safe side. The
    reason says it in words (``deployflow.error_words``); the raw error is the run log's."""
    reason = f"{what} failed: {in_words(error)}"
    return Trigger(None, None, "error", None, None, reason, headline=shorten(reason, TRIGGER_WORDS))


def blocking_checks(checks: list[CheckRecord]) -> list[CheckRecord]:
    """Step 1 and 2 results that stop the deploy."""
    return [c for c in checks if c.blocks]


def blocked_message(failed: list[CheckRecord]) -> str:
    return "blocked before any traffic moved: " + "; ".join(
        f"{c.name} {c.status.value} ({c.detail})" for c in failed
    )
