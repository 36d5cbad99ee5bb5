"""The deploy flow's steps, each a function ``flows.deploy.steps`` calls in order.

Decisions come from the core; these functions sequence tasks and subflows, record what happened in
the tracking database and tell it once, as the deploy's story (``deployflow.story``), which every
audience hears.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import get_run_logger
from prefect.settings import PREFECT_UI_URL

from deployflow.backends import Backends
from deployflow.checks import CheckContext, PreCheckReport, planned_checks
from deployflow.checks.runner import resolve_commit
from deployflow.error_words import in_words
from deployflow.fencing import lease_lost
from deployflow.manual_rollback import asked_by_a_person
from deployflow.notify.evidence import StorySources, commit_time
from deployflow.providers.base import BackendConfigError, Instance, OnCallRoster
from deployflow.providers.grafana import dashboard_link
from deployflow.reconcile import abandon_release
from deployflow.release import (
    CheckRecord,
    ReleaseOutcome,
    Status,
    Trigger,
    stage_trigger,
    step_failed_trigger,
    verification_trigger,
)
from deployflow.rollout import RolloutBroke, stable_error_rate_bound, stable_p95_beside
from deployflow.schema import SchemaRange, after_rollback, traffic_split_refusal
from deployflow.spec import ServiceSpec
from deployflow.story import Announced, Answered, Ended, Paused, SchemaSettled
from deployflow.strategy import StrategyChoice, StrategyName
from deployflow.tracking.answers import tracking_silence_reason
from deployflow.tracking.ledger import Ledger
from flows.oncall import confirm_on_call
from flows.rollback import rollback
from flows.rollout import progressive_rollout
from tasks.concurrency import deploy_slot, live_deploy_in
from tasks.execute import (
    discover_stable,
    execute,
    measure_baseline,
    preflight,
    retire_previous,
)
from tasks.keep import retire_kept_versions
from tasks.migrations import apply_migrations, migration_checks
from tasks.notify import who_is_on_call
from tasks.prechecks import github_token, pre_deployment_check, publish_prechecks, token_unavailable
from tasks.prefect_api import run_subflow
from tasks.reconcile import reconcile_interrupted, restore_live_version
from tasks.rollout import plan_stage_evidence, promote
from tasks.signals import preflight_signals
from tasks.tracking import record_start
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


def ended(outcome: ReleaseOutcome, status: Status, message: str) -> ReleaseOutcome:
    outcome.status, outcome.message = status, message
    return outcome


def announce(
    spec: ServiceSpec, b: Backends, outcome: ReleaseOutcome, plan: StrategyChoice
) -> OnCallRoster | None:
    """Step 4: who is on call, then the plan told to every audience (the thread's parent
    message, the dashboards' region). Returns the on-call roster."""
    roster = who_is_on_call(b.on_call) if b.on_call is not None else None
    b.story.record(
        Announced(
            strategy=plan.kind,
            steps=tuple(plan.steps),
            rationale=plan.rationale,
            on_call=roster.summary if roster is not None else None,
            risk_factors=tuple(
                f"{f.name}: +{f.contribution:g} (weight {f.weight:g} x {f.units:g}): {f.fact}"
                + (f" [at least {f.floor}]" if f.floor else "")
                for f in (plan.risk.factors if plan.risk else ())
                if f.contribution or f.floor
            ),
            dashboard_url=outcome_dashboard(outcome, spec.notifications.dashboard_url, live=True),
            run_url=run_url(outcome.flow_run_id),
        )
    )
    outcome.notifications = b.story.announcements()
    return roster


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


def begin(
    spec: ServiceSpec, b: Backends, req: ReleaseRequest
) -> tuple[ReleaseOutcome, Instance | None]:
    """Before the steps: put back the version the tracking database says is live when the router
    lost it, reconcile a dead deploy, find the stable version, create the row."""
    restored = restore_live_version(
        b.ledger,
        b.router,
        b.target,
        service=spec.service,
        environment=req.environment,
        own_flow_run_id=req.flow_run_id,
        dry_run=req.dry_run,
    )
    reconciled = reconcile_interrupted(
        b.ledger,
        b.router,
        b.target,
        service=spec.service,
        environment=req.environment,
        own_flow_run_id=req.flow_run_id,
        keep_previous=spec.keep_previous,
    )
    stable = discover_stable(b.router, b.target)
    if stable is None and restored is not None:
        # A dry run moved nothing; it plans against the live version where that one still runs.
        stable = restored.instance
    if not req.dry_run:
        retire_expired(b, spec.service, req.environment)
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
        reconciled=([restored.message] if restored else []) + reconciled,
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
        ended(outcome, "aborted", f"blocked before anything started: {in_words(exc)}")
        return None
    if stable is not None:
        try:
            outcome.baseline_p95_seconds = measure_baseline(
                b.metrics, stable, spec.analysis.baseline_window
            )
        except Exception as exc:
            ended(outcome, "aborted", f"blocked before any traffic moved: {in_words(exc)}")
            return None
    if not apply_schema(spec, b, outcome):
        return None
    try:
        return execute(b.target, req.version)
    except Exception as exc:
        ended(outcome, "failed", f"{req.version} did not start: {in_words(exc)}")
        return None


def schema_range(outcome: ReleaseOutcome) -> SchemaRange | None:
    """The range step 2 read (from its check record), None when step 2 did not read one."""
    record = next((c for c in outcome.checks if c.step == "migrations"), None)
    data = record.details.get("schema") if record is not None else None
    return SchemaRange.of(data) if isinstance(data, dict) else None


def schema_gate(spec: ServiceSpec, outcome: ReleaseOutcome, plan: StrategyChoice) -> str | None:
    """With ``migrations.apply``, a canary or blue-green whose range the old version cannot run
    with is refused before anything starts (``deployflow.schema.traffic_split_refusal``)."""
    if spec.migrations is None or spec.migrations.apply is None:
        return None
    schema = schema_range(outcome)
    if schema is None:
        return None
    return traffic_split_refusal(schema, plan.kind)


def apply_schema(spec: ServiceSpec, b: Backends, outcome: ReleaseOutcome) -> bool:
    """Step 5, before the new version starts (so before it takes any traffic): the release's
    migrations applied (``migrations.apply``), the database's revision before and after
    recorded. False (the outcome ended) when they could not be applied."""
    settings = spec.migrations
    schema = schema_range(outcome)
    if settings is None or settings.apply is None or schema is None:
        return True
    if not schema.revisions:
        return True  # the database is already at the release's revision
    destination = schema.to_revision or "head"
    run = apply_migrations(settings, destination, upgrade=True)
    change_id = b.ledger.schema_applied(
        outcome.require_id(), before=run.before, after=run.after, ok=run.ok,
        schema=schema.to_dict(), command=run.command, detail=run.detail,
    )  # fmt: skip
    outcome.schema = {
        "id": change_id, "before": run.before, "after": run.after, "range": schema.to_dict(),
        "command": run.command, "status": "applied" if run.ok else "failed",
        "detail": run.detail,
    }  # fmt: skip
    if run.ok:
        return True
    from deployflow.migrations.apply import undo_command

    ended(
        outcome, "failed",
        f"the migrations could not be applied ({run.detail}); {outcome.version} was not "
        f"started and no traffic moved. The database is at {run.after or 'no revision'} (it was "
        f"at {run.before or 'no revision'}); to return it: `{undo_command(settings, run.before)}`",
    )  # fmt: skip
    return False


def settle_schema(
    spec: ServiceSpec, b: Backends, outcome: ReleaseOutcome, stable: Instance
) -> None:
    """After the rollback subflow: what becomes of the schema the release applied
    (``deployflow.schema.after_rollback``). A downgrade runs only once traffic is back on the
    old version; the state and the command to undo it are told (thread, report, log)."""
    settings = spec.migrations
    applied = outcome.schema
    if settings is None or settings.apply is None or not applied or outcome.rollback is None:
        return
    from deployflow.migrations.apply import undo_command

    before, after = applied.get("before"), applied.get("after")
    decision = after_rollback(
        SchemaRange.of(applied.get("range") or {}),
        applied_from=before,
        applied_to=after,
        old_version=stable.version,
        traffic_back=outcome.rollback.error is None,
        downgrade_allowed=settings.apply.downgrade_on_rollback,
        downgrade_command=undo_command(settings, before),
    )
    status, message = {"keep": "kept", "leave": "left"}.get(decision.action, ""), decision.message
    if decision.action == "downgrade":
        run = apply_migrations(settings, decision.downgrade_to or "base", upgrade=False)
        after = run.after
        if run.ok:
            status = "downgraded"
            message = f"{decision.message}: the database is at {run.after or 'no revision'}"
        else:
            status = "left"
            message = (
                f"the downgrade to {decision.downgrade_to} failed ({run.detail}): the database is "
                f"at {run.after or 'unknown'}; {stable.version} serves all the traffic. To undo "
                f"it, a person decides and runs `{decision.command}`"
            )
    try:
        b.ledger.schema_settled(int(applied["id"]), status, message, after)
    except Exception:  # the schema is settled; its record failing is logged, never fatal
        get_run_logger().exception("could not record what became of the schema")
    outcome.schema = {**applied, "status": status, "detail": message, "after": after}
    b.story.record(SchemaSettled(status, message))


def retire_expired(b: Backends, service: str, environment: str) -> None:
    """Stop the previous versions earlier releases kept warm (``keep_previous``) whose window has
    ended. Tidying only: a failure is logged and the run goes on (the next run tries again)."""
    try:
        retire_kept_versions(b.ledger, b.router, b.target, service=service, environment=environment)
    except Exception:
        get_run_logger().exception("could not stop the versions kept past their keep_previous")


def succeeded(
    b: Backends,
    outcome: ReleaseOutcome,
    stable: Instance | None,
    keep_previous: float | None = None,
) -> ReleaseOutcome:
    """The new version serves everything and passed verification: retire the old one, or, with
    the spec's ``keep_previous``, leave it running for that long (a rollback inside the window
    is one router call); the next deploy or rollback, or the retire-kept-versions flow, stops it
    once the window ends."""
    if stable is not None and keep_previous:
        until = datetime.now(UTC) + timedelta(seconds=keep_previous)
        outcome.kept_previous = (stable.version, until)
        get_run_logger().info(
            "%s keeps running until %s UTC (keep_previous)", stable.version, f"{until:%H:%M:%S}"
        )
    elif stable is not None:
        try:
            retire_previous(b.target, stable)
        except Exception:  # the release is done; a leftover old process is only untidy
            get_run_logger().exception("could not stop the previous version %s", stable.version)
    done = f"{outcome.version} serves all the traffic and passed verification"
    if outcome.kept_previous is not None:
        kept, until = outcome.kept_previous
        done += f"; {kept} kept running until {until:%H:%M:%S} UTC for a one-call rollback"
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
    if lease_lost(b.router):
        # Another deploy owns the traffic now: undoing "this" release would undo that one's.
        return ended(
            outcome,
            "failed",
            f"{trigger.headline}; not rolled back: this deploy lost its lease in the tracking "
            "database (paused or cut off longer than the lease) and touched no traffic after "
            "that; the next deploy reconciles what it left",
        )
    if stable is None:
        return ended(outcome, "failed", f"{trigger.headline}; no previous version to roll back to")
    last = outcome.stages[-1].measurements if outcome.stages else []
    # The stage that fired put traffic back itself (``restore_at_once``): not restored again.
    judged = outcome.stages[-1] if outcome.stages else None
    at_once = judged.restore_seconds if judged and judged.index == trigger.stage else None
    outcome.rollback = run_subflow(
        rollback,
        b,
        outcome.require_id(),
        stable,
        canary,
        trigger,
        spec.analysis,
        spec.smoke,
        outcome.baseline_p95_seconds,
        last,
        stable_error_rate_bound(outcome.stages, spec.analysis.confidence),
        restored_at_once=at_once,
        stable_p95_seconds=stable_p95_beside(outcome.stages, spec.analysis.min_requests),
    )
    settle_schema(spec, b, outcome, stable)
    if outcome.rollback.error is not None:
        failed = f"ROLLBACK FAILED ({outcome.rollback.error}) after: {trigger.headline}"
        return ended(outcome, "failed", failed)
    status: Status = "rolled_back" if outcome.rollback.verified else "failed"
    return ended(outcome, status, f"rolled back to {stable.version}: {trigger.headline}")


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
        outcome.stages = run_subflow(
            progressive_rollout,
            b,
            outcome.require_id(),
            plan,
            spec.analysis,
            stable,
            canary,
            outcome.baseline_p95_seconds,
            spec.smoke,
        )
    except Exception as exc:
        get_run_logger().exception("the rollout broke")
        if isinstance(exc, RolloutBroke):  # the stages that ran before it broke stay evidence
            outcome.stages = exc.stages
            return tracking_silence(b) or step_failed_trigger("the rollout", exc.error)
        return tracking_silence(b) or step_failed_trigger("the rollout", exc)
    trigger = stage_trigger(outcome.stages[-1], spec.analysis.max_error_rate)
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
            # Stable with all the traffic before the deploy: the load the new version has now.
            baseline_p95_seconds=outcome.baseline_p95_seconds,
            transport=b.http_transport,
            # Its stages judged it: a breach fails it, metrics that cannot be read do not.
            metrics_required=False,
            expected_error_rate=stable_error_rate_bound(outcome.stages, spec.analysis.confidence),
            dependencies=b.dependencies,
            alerts=b.alerts,
            serving_since=outcome.stages[-1].started_at,
            stable_p95_seconds=stable_p95_beside(outcome.stages, spec.analysis.min_requests),
        )
    except Exception as exc:
        get_run_logger().exception("promotion or verification broke")
        return tracking_silence(b) or step_failed_trigger("promotion or verification", exc)
    trigger = verification_trigger(outcome.verification)
    if trigger is not None or spec.flags is None:
        return trigger
    return release_flags(spec, b, outcome, canary)


def tracking_silence(b: Backends) -> Trigger | None:
    """A step that broke while the tracking database was not answering (its write failed, or
    the lease could not be confirmed for a move towards the new version): that is the reason
    to roll back, said as such. None while the database answers."""
    silent = b.ledger.stopped_answering(0.0)
    if silent is None:
        return None
    return Trigger(None, None, "tracking_database", None, None, tracking_silence_reason(silent))


def release_flags(
    spec: ServiceSpec, b: Backends, outcome: ReleaseOutcome, promoted: Instance
) -> Trigger | None:
    """After a canary's or a direct release's promotion and verification, the spec's release
    flags step by step (the flag-rollout subflow, as after a blue-green switch); the previous
    version still runs until the deploy succeeds, so a version still bad with its flags killed
    is rolled back like any other."""
    assert spec.flags is not None
    from flows.flags import flag_rollout  # only a spec with flags loads the subflow

    try:
        rolled = run_subflow(
            flag_rollout,
            b,
            outcome.require_id(),
            spec.flags,
            spec.analysis,
            promoted.version,
            outcome.baseline_p95_seconds,
            first_index=len(outcome.stages),
        )
    except Exception as exc:
        get_run_logger().exception("the flag rollout broke")
        return step_failed_trigger("the flag rollout", exc)
    outcome.stages = [*outcome.stages, *rolled.stages]
    outcome.flag_changes = [c.to_dict() for c in rolled.changes]
    warn_if_flag_killed(rolled.killed, rolled.trigger, promoted.version)
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
    from flows.bluegreen import blue_green  # only a blue-green release loads the subflow

    try:
        result = run_subflow(
            blue_green,
            b,
            outcome.require_id(),
            plan,
            spec.analysis,
            spec.smoke,
            blue,
            green,
            outcome.baseline_p95_seconds,
            spec.flags,
        )
    except Exception as exc:
        get_run_logger().exception("the blue-green release broke")
        if isinstance(exc, RolloutBroke):  # the stages judged before it broke stay evidence
            outcome.stages = exc.stages
            return step_failed_trigger("the blue-green release", exc.error)
        return step_failed_trigger("the blue-green release", exc)
    outcome.stages = result.stages
    outcome.verification = result.verification or result.isolation
    outcome.switch_seconds = result.switch_seconds
    outcome.flag_changes = [c.to_dict() for c in result.flag_changes]
    warn_if_flag_killed(result.flag_killed, result.trigger, green.version)
    return result.trigger


def warn_if_flag_killed(killed: str | None, trigger: Trigger | None, version: str) -> None:
    """A flag the kill switch turned off, on a version healthy without it: it stays."""
    if killed is not None and trigger is None:
        get_run_logger().warning(
            "flag %s was killed; %s itself is healthy and stays", killed, version
        )


def dry_run_plan(
    spec: ServiceSpec, b: Backends, plan: StrategyChoice, stable: Instance | None
) -> str:
    """A dry run's outcome: the plan, and what today's traffic buys each canary stage."""
    planned = f"dry run: checks passed, plan {plan_text(plan)}; nothing was started"
    evidence = []
    if plan.kind == "canary" and stable is not None:
        evidence = plan_stage_evidence(
            b.metrics, stable, plan.steps, plan.observe_seconds, spec.analysis
        )
    if evidence:
        planned += "\n  at today's traffic:\n" + "\n".join(f"  - {line}" for line in evidence)
    return planned


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


def run_url(flow_run_id: str | None) -> str | None:
    """The run in the Prefect UI, when a server with a UI is configured."""
    base = PREFECT_UI_URL.value()
    if not base or not flow_run_id:
        return None
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}"


def on_call_gate(
    spec: ServiceSpec,
    b: Backends,
    req: ReleaseRequest,
    roster: OnCallRoster | None,
    deployment_id: int | None = None,
) -> str | None:
    """Step 4's people in the loop: where the spec asks for it (``notifications.on_call.confirm``
    for this environment), wait for somebody to confirm being on call. Returns why the deploy must
    not go on, or None: a person's rollback asked meanwhile (``deployflow rollback`` answers the
    form with a no) is named as that, with its reason."""
    section = spec.notifications.on_call
    if section is None or not section.confirmation_required(req.environment):
        return None
    gate = "on-call confirmation"
    question = f"who is on call and watching {spec.service} {req.version} in {req.environment}?"
    b.story.record(Paused(gate, question, section.confirm_timeout))
    answer = confirm_on_call(
        spec.service, req.version, req.environment, roster, section.confirm_timeout
    )
    refusal = answer.refusal
    if refusal is not None:
        asked = asked_by_a_person(b.ledger, deployment_id)
        if asked is not None:
            refusal = f"{asked} (while the deploy waited for its on-call confirmation)"
    b.story.record(Answered(gate, answer.confirmed_by, refusal))
    return refusal


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
    what = signal_name(signal)
    result = abandon_release(b.router, b.target, stable, version)
    logger.error("interrupted (%s): %s", what, result.message)
    ending = f"interrupted ({what}): {result.message}"
    serving = None
    if result.restored:
        serving = stable.version if stable is not None else version
    outcome.interruption = {
        "signal": what,
        "traffic_restored": result.restored,
        "serving": serving,
    }
    if result.restored:
        try:
            b.ledger.close(outcome.require_id(), "failed", ending)
        except Exception as exc:  # the next deploy reconciles the row; people hear it below
            logger.warning("the interruption could not be recorded: %s", exc)
    # Nothing after this runs (the run is being stopped): every audience hears the end now.
    b.story.record(Ended(ended(outcome, "failed", ending)))


def signal_name(signal: BaseException) -> str:
    """What stopped a run, as people name it: SIGINT (Ctrl-C), SIGTERM, or the exception's
    name (a Prefect cancellation)."""
    if isinstance(signal, KeyboardInterrupt):
        return "SIGINT"
    number = getattr(signal, "signal", None)
    if isinstance(number, int):
        import signal as signals

        try:
            return signals.Signals(number).name
        except ValueError:
            pass
    return type(signal).__name__


def stopped_outside_a_stage(
    b: Backends,
    outcome: ReleaseOutcome,
    stable: Instance | None,
    signal: BaseException,
) -> ReleaseOutcome:
    """The run is being stopped outside steps 5 to 7 (``interrupted`` handles those): before
    the new version was started, nothing moved and the row is closed saying so; after them (the
    release promoted or rolling back), where traffic ends is not known here: the row stays open
    for the next deploy to reconcile. Returns the outcome with its ``interruption``; never
    raises (the run is being torn down)."""
    if outcome.interruption is not None:
        return outcome  # ``interrupted`` told it already
    name = signal_name(signal)
    if outcome.started_new_version:
        outcome.interruption = {"signal": name, "traffic_restored": None, "serving": None}
        return ended(
            outcome,
            "failed",
            f"interrupted ({name}) after its stages, before its outcome was recorded: where "
            "traffic is, `deployflow status` tells; the next deploy reconciles it first",
        )
    outcome.interruption = {
        "signal": name,
        "traffic_restored": True,
        "serving": stable.version if stable is not None else None,
    }
    ending = f"interrupted ({name}) before {outcome.version} was started: no traffic moved"
    try:
        if outcome.deployment_id is not None:
            b.ledger.close(outcome.deployment_id, "failed", ending)
    except Exception:  # the next deploy reconciles a row left open
        get_run_logger().exception("could not record the interruption")
    b.story.record(Ended(ended(outcome, "failed", ending)))
    return outcome
