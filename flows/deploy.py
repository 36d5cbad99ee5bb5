"""The deploy flow: one release of one service through the nine steps.

``deploy`` reads the spec once and builds the run's backends once (``connect``); ``release``
then sequences the steps, handing each task the one collaborator it needs:

1 pre-deployment checks and 2 migration checks (concurrently), 3 strategy, 4 notify and prepare,
5 execute, 6 progressive rollout, 7 post-deploy verification, 8 rollback (only when a verdict asks
for it), 9 complete. Decisions come from the core; this module only sequences steps and reacts to
their verdicts.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from prefect.utilities.annotations import quote
from pydantic import Field

from blocks.service_spec import ServiceSpecBlock
from deployflow import events
from deployflow.backends import Backends
from deployflow.checks import CheckContext, PreCheckReport, planned_checks
from deployflow.checks.runner import resolve_commit
from deployflow.notify.evidence import StorySources, commit_time
from deployflow.notify.slack import format_deploy_announcement
from deployflow.notify.story import deploy_card, outcome_line
from deployflow.providers.base import BackendConfigError, DeployCard, Instance, OnCallRoster
from deployflow.providers.grafana import dashboard_link
from deployflow.reconcile import abandon_release
from deployflow.release import (
    CheckRecord,
    ReleaseOutcome,
    Status,
    Trigger,
    blocked_message,
    blocking_checks,
    stage_trigger,
    step_failed_trigger,
    verification_trigger,
)
from deployflow.rollout import latest_stable_p95, stable_error_rate_bound
from deployflow.spec import ENVIRONMENT_PATTERN, VERSION_PATTERN, ServiceSpec, SpecError
from deployflow.strategy import StrategyChoice, StrategyName, risk_decides
from deployflow.tracking.lease import Lease
from deployflow.tracking.ledger import Ledger
from flows.bluegreen import blue_green
from flows.flags import flag_rollout
from flows.oncall import confirm_on_call
from flows.outcome_state import final_state, refused_state
from flows.progress import Progress, annotation_tags, tell_interrupted
from flows.rollback import rollback
from flows.rollout import progressive_rollout
from tasks.complete import complete
from tasks.concurrency import deploy_slot, live_deploy_in
from tasks.connect import connect_backends, load_service_spec
from tasks.events import send_events
from tasks.execute import (
    discover_stable,
    execute,
    measure_baseline,
    preflight,
    retire_previous,
)
from tasks.migrations import migration_checks
from tasks.notify import annotate, notify_and_prepare, notify_thread, who_is_on_call
from tasks.prechecks import github_token, pre_deployment_check, publish_prechecks, token_unavailable
from tasks.reconcile import reconcile_interrupted
from tasks.rollout import promote
from tasks.signals import preflight_signals
from tasks.story import write_report
from tasks.strategy import assess_risk_task, choose_strategy_task
from tasks.tracking import record_plan, record_start
from tasks.verify import verify_instance


@dataclass(frozen=True)
class ReleaseRequest:
    """What was asked for: the flow's parameters, validated."""

    version: str
    environment: str
    strategy: StrategyName = "auto"
    dry_run: bool = False
    git_ref: str | None = None
    flow_run_id: str | None = None


@flow(
    name="deploy",
    flow_run_name="deploy {version} to {environment}",
    validate_parameters=True,
)
def deploy(
    version: Annotated[str, Field(pattern=VERSION_PATTERN)],
    spec_path: str | None = None,
    service: ServiceSpecBlock | None = None,
    environment: Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)] = "sandbox",
    strategy: StrategyName = "auto",
    dry_run: bool = False,
    git_ref: str | None = None,
    tracking_block: str | None = None,
) -> State[dict[str, Any]]:
    """Release one version of a service, rolling back automatically when it misbehaves.

    Args:
        version: The version to release (letters, digits, '.', '_', '+', '-').
        spec_path: Path of the service spec YAML file on the machine that runs the flow; a
            relative path resolves against the run's working directory (the deployment's
            checkout). Not read when a service is chosen.
        service: The service, as a saved ServiceSpec block (the form lists them); chosen, it
            replaces spec_path.
        environment: Where it goes (sandbox, staging, production...); recorded with the run.
        strategy: 'auto' follows the spec (a fixed kind, a per-environment pin, or the measured
            risk); 'canary', 'direct' or 'blue-green' override it.
        dry_run: Run the checks and plan the release without starting anything or moving traffic.
        git_ref: Commit or ref being released, in the service checkout (default HEAD); the
            changelog check compares it with the ref of the version deployed now.
        tracking_block: Name of the deployflow tracking database block; empty uses
            DEPLOYFLOW_DATABASE_URL or the local SQLite file of the machine running the flow.
    """
    spec = load_service_spec(spec_path, version, service)
    if isinstance(spec, SpecError):
        return refused_state(spec)
    run_id = flow_run.get_id()
    request = ReleaseRequest(
        version, environment, strategy, dry_run, git_ref, str(run_id) if run_id else None
    )
    backends = connect_backends(spec, tracking_block, environment)
    try:
        with one_deploy_at_a_time(spec, request, backends.ledger):
            return finish(
                release(spec, backends, request),
                backends,
                story_sources(spec, backends),
                spec.notifications.dashboard_url,
            )
    finally:
        backends.close()  # e.g. the github-actions target's HTTP clients


def one_deploy_at_a_time(
    spec: ServiceSpec, req: ReleaseRequest, ledger: Ledger | None
) -> AbstractContextManager[Any]:
    """The service's and environment's Prefect concurrency limit, held for the whole deploy (the
    spec's ``concurrency`` says whether a second deploy waits or is refused; a slot left by a
    deploy that died, which the tracking database no longer sees running, is waited out). A dry
    run starts nothing and holds no slot: a nightly dry run never delays a release."""
    if req.dry_run:
        return nullcontext()
    return deploy_slot(
        spec.service,
        req.environment,
        spec.concurrency,
        get_run_logger(),
        req.flow_run_id,
        holder_alive=lambda: live_deploy_in(ledger, spec.service, req.environment, req.flow_run_id),
    )


def story_sources(spec: ServiceSpec, backends: Backends) -> StorySources:
    """Where the report after the deploy gets its evidence."""
    return StorySources(
        metrics=backends.metrics,
        target=backends.target,
        checkout=spec.pre_checks.checkout if spec.pre_checks else None,
        window_seconds=spec.analysis.window,
        error_rate_limit=spec.analysis.max_error_rate,
    )


def finish(
    outcome: ReleaseOutcome,
    backends: Backends,
    story: StorySources | None = None,
    spec_dashboard: str | None = None,
) -> State[Any]:
    """Step 9, then the run's final state (``final_state``): Completed for a release or a dry
    run, Failed otherwise, tagged with the outcome; the message says it. With ``story``,
    the incident report or success summary (charts, breakdown, log, commits) is written too. The
    verdict's message links ``spec_dashboard`` over the deploy's whole time range."""
    # Quoted: the outcome holds the subflows' results, which Prefect would otherwise record as
    # flow-run inputs of this task (which the UI's Task Runs tab cannot show).
    complete(quote(outcome), backends.ledger, incident_artifact=story is None)  # type: ignore[call-overload]
    if story is not None and outcome.deployment_id is not None and not outcome.dry_run:
        write_report(backends.ledger, outcome.deployment_id, quote(story))  # type: ignore[call-overload]
    send_events(events.ended(outcome))
    if outcome.notifications:
        line = outcome_line(outcome)
        link = outcome_dashboard(outcome, spec_dashboard)
        if link is not None:
            line += f"\n<{link}|Dashboard of the deploy>"
        notify_thread(backends.notifiers, outcome.notifications, [line], outcome=line)
    if backends.annotators:
        verdict = f"{outcome.version} {outcome.status.replace('_', ' ')}: {outcome.message}"
        tags = [*annotation_tags(outcome), outcome.status]
        annotate(backends.annotators, tags, points=[verdict], end=verdict)
    return final_state(outcome)


def release(spec: ServiceSpec, b: Backends, req: ReleaseRequest) -> ReleaseOutcome:
    """The nine steps. Returns the outcome; step 9 (recording it) is the caller's.

    From the moment its row exists until it returns, the deploy holds a lease in the tracking
    database, so a later deploy knows whether this one is alive.
    """
    outcome, stable = begin(spec, b, req)
    send_events(events.started(outcome))
    with Lease(b.ledger, outcome.require_id()):
        return steps(spec, b, req, outcome, stable)


def steps(
    spec: ServiceSpec,
    b: Backends,
    req: ReleaseRequest,
    outcome: ReleaseOutcome,
    stable: Instance | None,
) -> ReleaseOutcome:
    """Steps 1 to 8 of a deploy whose row exists."""
    if stable is not None and stable.version == req.version:
        # Idempotent: re-running a pipeline for the version that is live is not an error.
        live = f"{req.version} already serves all the traffic: nothing to deploy"
        return ended(outcome, "succeeded", live)

    outcome.checks = gates(spec, b, req, outcome.git_ref)  # steps 1 and 2
    failed = blocking_checks(outcome.checks)
    if failed:
        get_run_logger().error(blocked_message(failed))
        return ended(outcome, "aborted", blocked_message(failed))

    risk = None
    if risk_decides(spec.strategy):  # step 3: one git diff and one query, only when they count
        risk = assess_risk_task(
            b.ledger,
            spec.risk,
            service=spec.service,
            environment=req.environment,
            checkout=spec.pre_checks.checkout if spec.pre_checks else None,
            new_ref=outcome.git_ref,
            checks=outcome.checks,
        )
    plan = choose_strategy_task(
        spec.strategy, req.strategy, stable is not None, req.environment, risk
    )
    outcome.strategy, outcome.strategy_rationale = plan.kind, plan.rationale
    outcome.strategy_factors = plan.rationale_dict()
    record_plan(b.ledger, outcome.require_id(), plan)

    roster = who_is_on_call(b.on_call) if b.on_call is not None else None  # step 4
    on_call = roster.summary if roster is not None else None
    dashboard = outcome_dashboard(outcome, spec.notifications.dashboard_url, live=True)
    text = announcement(spec, req, plan, on_call, dashboard)
    outcome.notifications = notify_and_prepare(
        b.notifiers, text, on_call, card(spec, req, plan, on_call, text, dashboard)
    )
    if b.annotators:
        started = f"deploy {spec.service} {req.version} to {req.environment} ({plan.kind})"
        annotate(b.annotators, annotation_tags(outcome), start=started)
    if req.dry_run:
        planned = f"dry run: checks passed, plan {plan_text(plan)}; nothing was started"
        return ended(outcome, "succeeded", planned)
    refusal = on_call_gate(spec, req, roster)
    if refusal is not None:
        return ended(outcome, "aborted", f"{refusal}; nothing was started")

    try:
        canary = start_new_version(spec, b, req, outcome, stable)  # step 5
        if canary is None:
            return outcome
        trigger = roll_out_and_verify(spec, b, outcome, plan, stable, canary)  # steps 6 and 7
    except BaseException as exc:
        if isinstance(exc, Exception):
            raise
        # Ctrl-C, SIGTERM, a Prefect cancellation: never leave users on an unverified version.
        interrupted(b, outcome, stable, req.version, exc)
        raise
    if trigger is None:
        return succeeded(b, outcome, stable)
    return roll_back(spec, b, outcome, stable, canary, trigger)  # step 8


def interrupted(
    b: Backends,
    outcome: ReleaseOutcome,
    stable: Instance | None,
    version: str,
    signal: BaseException,
) -> None:
    """The run is being stopped while the new version may have traffic: put traffic back on the
    stable version and stop the new one, directly (the run's tasks are being torn down), and
    record it. What cannot be done here the next deploy reconciles (the row keeps its weight)."""
    logger = get_run_logger()
    what = type(signal).__name__
    result = abandon_release(b.router, b.target, stable, version)
    logger.error("interrupted (%s): %s", what, result.message)
    ending = f"interrupted ({what}): {result.message}"
    if result.restored:
        b.ledger.close(outcome.require_id(), "failed", ending)
    # Nothing after this runs (the run is being stopped): the thread and the feed hear it now.
    tell_interrupted(b, ended(outcome, "failed", ending), outcome_line(outcome))


def ended(outcome: ReleaseOutcome, status: Status, message: str) -> ReleaseOutcome:
    outcome.status, outcome.message = status, message
    return outcome


def begin(
    spec: ServiceSpec, b: Backends, req: ReleaseRequest
) -> tuple[ReleaseOutcome, Instance | None]:
    """Before the steps: reconcile a dead deploy, find the stable version, create the row."""
    reconciled = reconcile_interrupted(
        b.ledger,
        b.router,
        b.target,
        service=spec.service,
        environment=req.environment,
        own_flow_run_id=req.flow_run_id,
    )
    stable = discover_stable(b.router, b.target)
    git_ref = req.git_ref
    commit_at = None
    if spec.pre_checks is not None:
        # Record the commit, not a moving name like HEAD: the next deploy compares against it.
        git_ref = resolve_commit(git_ref or "HEAD", spec.pre_checks.checkout) or git_ref
        if git_ref is not None and not req.dry_run:
            # Where the lead time for changes starts (deployflow stats).
            commit_at = commit_time(spec.pre_checks.checkout, git_ref)
    outcome = ReleaseOutcome(
        service=spec.service,
        environment=req.environment,
        version=req.version,
        previous_version=stable.version if stable else None,
        dry_run=req.dry_run,
        git_ref=git_ref,
        commit_at=commit_at,
        flow_run_id=req.flow_run_id,
        reconciled=reconciled,
        started_at=datetime.now(UTC),
    )
    outcome.deployment_id = record_start(b.ledger, outcome)
    return outcome, stable


def start_new_version(
    spec: ServiceSpec,
    b: Backends,
    req: ReleaseRequest,
    outcome: ReleaseOutcome,
    stable: Instance | None,
) -> Instance | None:
    """Step 5: the backends' own checks, the stable version's P95 baseline, then the new version
    started and healthy. None (with the outcome ended) when the deploy cannot go on; no traffic
    has moved then.

    First of all, do not deploy into an incident: matching alerts already firing, or a
    dependency already down, block the deploy before anything starts."""
    if b.alerts is not None or b.dependencies:
        problems = preflight_signals(b.alerts, b.dependencies)
        if problems:
            blocked = "; ".join(problems)
            ended(outcome, "aborted", f"blocked before any traffic moved: {blocked}")
            return None
    try:
        preflight(b.router, b.target)
    except Exception as exc:
        ended(outcome, "aborted", f"blocked before anything started: {exc}")
        return None
    if stable is not None:
        try:
            outcome.baseline_p95_seconds = measure_baseline(
                b.metrics, stable, spec.analysis.baseline_window
            )
        except Exception as exc:
            ended(outcome, "aborted", f"blocked before any traffic moved: {exc}")
            return None
    try:
        return execute(b.target, req.version)
    except Exception as exc:
        ended(outcome, "failed", f"{req.version} did not start: {exc}")
        return None


def succeeded(b: Backends, outcome: ReleaseOutcome, stable: Instance | None) -> ReleaseOutcome:
    """The new version serves everything and passed verification: retire the old one."""
    if stable is not None:
        try:
            retire_previous(b.target, stable)
        except Exception:  # the release is done; a leftover old process is only untidy
            get_run_logger().exception("could not stop the previous version %s", stable.version)
    done = f"{outcome.version} serves all the traffic and passed verification"
    killed = [f["flag"] for f in outcome.flag_changes if f["reason"].startswith("kill switch")]
    if killed:
        done += f"; feature flag(s) {', '.join(killed)} turned off by the kill switch"
    return ended(outcome, "succeeded", done)


def roll_back(
    spec: ServiceSpec,
    b: Backends,
    outcome: ReleaseOutcome,
    stable: Instance | None,
    canary: Instance,
    trigger: Trigger,
) -> ReleaseOutcome:
    """Step 8: the rollback subflow, and what its result means for the release."""
    if stable is None:
        return ended(outcome, "failed", f"{trigger.reason}; no previous version to roll back to")
    last = outcome.stages[-1].measurements if outcome.stages else []
    outcome.rollback = rollback(
        b,
        outcome.require_id(),
        spec.service,
        stable,
        canary,
        trigger,
        spec.analysis,
        spec.smoke,
        outcome.baseline_p95_seconds,
        last,
        stable_error_rate_bound(outcome.stages, spec.analysis.confidence),
        Progress.of(outcome),
    )
    if outcome.rollback.error is not None:
        failed = f"ROLLBACK FAILED ({outcome.rollback.error}) after: {trigger.reason}"
        return ended(outcome, "failed", failed)
    status: Status = "rolled_back" if outcome.rollback.verified else "failed"
    return ended(outcome, status, f"rolled back to {stable.version}: {trigger.reason}")


def gates(
    spec: ServiceSpec, b: Backends, req: ReleaseRequest, git_ref: str | None
) -> list[CheckRecord]:
    """Steps 1 and 2: every pre-deployment gate as its own task, beside the migration checks."""
    migrations = migration_checks.submit(spec.migrations, spec.service)
    checks = pre_checks(spec, b, req, git_ref)
    return [*checks, migrations.result()]


def pre_checks(
    spec: ServiceSpec, b: Backends, req: ReleaseRequest, git_ref: str | None
) -> list[CheckRecord]:
    """Step 1: the gates concurrently; the table becomes an artifact."""
    section = spec.pre_checks
    if section is None:
        return [
            CheckRecord.skipped("pre_checks", "pre_checks", "the spec has no pre_checks section")
        ]
    try:
        token = github_token(section)
    except BackendConfigError as exc:
        return [token_unavailable(exc)]
    deployed = b.ledger.deployed(spec.service, req.environment)
    ctx = CheckContext(
        version=req.version,
        new_ref=git_ref or "HEAD",
        previous_ref=deployed.git_ref if deployed else None,
        github_token=token,
    )
    futures = [pre_deployment_check.submit(kind, section, ctx) for kind in planned_checks(section)]
    return publish_prechecks(PreCheckReport(results=[f.result() for f in futures]), spec.service)


def roll_out_and_verify(
    spec: ServiceSpec,
    b: Backends,
    outcome: ReleaseOutcome,
    plan: StrategyChoice,
    stable: Instance | None,
    canary: Instance,
) -> Trigger | None:
    """Steps 6 and 7: the stages, promotion and verification. Returns why to roll back, or None.

    Any step that breaks is a reason to roll back: traffic must end on a version known healthy.
    """
    if plan.kind == "blue-green" and stable is not None:
        return switch_and_keep_blue(spec, b, outcome, plan, stable, canary)
    try:
        outcome.stages = progressive_rollout(
            b,
            outcome.require_id(),
            plan,
            spec.analysis,
            stable,
            canary,
            outcome.baseline_p95_seconds,
            Progress.of(outcome),
        )
    except Exception as exc:
        get_run_logger().exception("the rollout broke")
        return step_failed_trigger("the rollout", exc)
    trigger = stage_trigger(outcome.stages[-1])
    if trigger is not None:
        return trigger
    try:
        promote(b.router, b.ledger, outcome.require_id(), canary)
        outcome.verification = verify_instance(
            canary,
            target=b.target,
            router=b.router,
            metrics=b.metrics,
            smoke=spec.smoke,
            analysis=spec.analysis,
            baseline_p95_seconds=latest_stable_p95(outcome.stages, outcome.baseline_p95_seconds),
            transport=b.http_transport,
            expected_error_rate=stable_error_rate_bound(outcome.stages, spec.analysis.confidence),
            dependencies=b.dependencies,
            alerts=b.alerts,
            serving_since=outcome.stages[-1].started_at,
        )
    except Exception as exc:
        get_run_logger().exception("promotion or verification broke")
        return step_failed_trigger("promotion or verification", exc)
    trigger = verification_trigger(outcome.verification)
    if trigger is not None or spec.flags is None:
        return trigger
    return release_flags(spec, b, outcome, canary)


def release_flags(
    spec: ServiceSpec, b: Backends, outcome: ReleaseOutcome, promoted: Instance
) -> Trigger | None:
    """After a canary's or a direct release's promotion and verification, the spec's release
    flags step by step (the flag-rollout subflow, as after a blue-green switch); the previous
    version still runs until the deploy succeeds, so a version still bad with its flags killed
    is rolled back like any other."""
    assert spec.flags is not None
    try:
        rolled = flag_rollout(
            b,
            outcome.require_id(),
            spec.flags,
            spec.analysis,
            promoted.version,
            outcome.baseline_p95_seconds,
            first_index=len(outcome.stages),
            progress=Progress.of(outcome),
        )
    except Exception as exc:
        get_run_logger().exception("the flag rollout broke")
        return step_failed_trigger("the flag rollout", exc)
    outcome.stages = [*outcome.stages, *rolled.stages]
    outcome.flag_changes = [c.to_dict() for c in rolled.changes]
    if rolled.killed is not None and rolled.trigger is None:
        get_run_logger().warning(
            "flag %s was killed; %s itself is healthy and stays", rolled.killed, promoted.version
        )
    return rolled.trigger


def switch_and_keep_blue(
    spec: ServiceSpec,
    b: Backends,
    outcome: ReleaseOutcome,
    plan: StrategyChoice,
    blue: Instance,
    green: Instance,
) -> Trigger | None:
    """Steps 6 and 7 for blue-green (the subflow verifies green after the switch itself)."""
    try:
        result = blue_green(
            b,
            outcome.require_id(),
            plan,
            spec.analysis,
            spec.smoke,
            blue,
            green,
            outcome.baseline_p95_seconds,
            spec.flags,
            Progress.of(outcome),
        )
    except Exception as exc:
        get_run_logger().exception("the blue-green release broke")
        return step_failed_trigger("the blue-green release", exc)
    outcome.stages = result.stages
    outcome.verification = result.verification or result.isolation
    outcome.switch_seconds = result.switch_seconds
    outcome.flag_changes = [c.to_dict() for c in result.flag_changes]
    if result.flag_killed is not None and result.trigger is None:
        get_run_logger().warning(
            "flag %s was killed; %s itself is healthy and stays", result.flag_killed, green.version
        )
    return result.trigger


def plan_text(plan: StrategyChoice) -> str:
    return f"{plan.kind} {'/'.join(f'{w}%' for w in plan.steps)} ({plan.rationale})"


def outcome_dashboard(
    outcome: ReleaseOutcome, url: str | None, *, live: bool = False
) -> str | None:
    """The spec's dashboard over the deploy: from its start to now while it runs (``live``), to
    its end once it is over."""
    if url is None or outcome.started_at is None:
        return url
    return dashboard_link(url, outcome.started_at, None if live else datetime.now(UTC))


def announcement(
    spec: ServiceSpec,
    req: ReleaseRequest,
    plan: StrategyChoice,
    on_call: str | None,
    dashboard: str | None = None,
) -> str:
    return format_deploy_announcement(
        spec.service,
        req.version,
        req.environment,
        plan.rationale,
        stages=plan.steps,
        on_call=on_call,
        dashboard_url=dashboard,
        risk_factors=[
            f"{f.name}: +{f.contribution:g} (weight {f.weight:g} x {f.units:g}): {f.fact}"
            + (f" [at least {f.floor}]" if f.floor else "")
            for f in (plan.risk.factors if plan.risk else ())
            if f.contribution or f.floor
        ],
    )


def card(
    spec: ServiceSpec,
    req: ReleaseRequest,
    plan: StrategyChoice,
    on_call: str | None,
    text: str,
    dashboard: str | None = None,
) -> DeployCard:
    return deploy_card(
        text,
        service=spec.service,
        version=req.version,
        environment=req.environment,
        strategy=plan.kind,
        stages=plan.steps,
        on_call=on_call,
        dashboard_url=dashboard,
        run_url=run_url(req.flow_run_id),
    )


def run_url(flow_run_id: str | None) -> str | None:
    """The run in the Prefect UI, when a server with a UI is configured."""
    base = PREFECT_UI_URL.value()
    if not base or not flow_run_id:
        return None
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}"


def on_call_gate(spec: ServiceSpec, req: ReleaseRequest, roster: OnCallRoster | None) -> str | None:
    """Step 4's people in the loop: where the spec asks for it (``notifications.on_call.confirm``
    for this environment), wait for somebody to confirm being on call. Returns why the deploy must
    not go on, or None."""
    section = spec.notifications.on_call
    if section is None or not section.confirmation_required(req.environment):
        return None
    answer = confirm_on_call(
        spec.service, req.version, req.environment, roster, section.confirm_timeout
    )
    return answer.refusal
