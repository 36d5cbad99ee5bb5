"""The deploy flow: one release of one service through the nine steps.

1 pre-deployment checks and 2 migration checks (concurrently), 3 strategy, 4 notify and prepare,
5 execute, 6 progressive rollout, 7 post-deploy verification, 8 rollback (only when a verdict asks
for it), 9 complete. Decisions come from the core; this module only sequences steps and reacts to
their verdicts.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import State, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from deployflow.checks import CheckContext, PreCheckReport, planned_checks
from deployflow.checks.runner import resolve_commit
from deployflow.providers.base import Instance
from deployflow.providers.factory import build_router, build_target
from deployflow.release import (
    ReleaseOutcome,
    RollbackInfo,
    blocking_checks,
    stage_trigger,
    verification_trigger,
)
from deployflow.spec import (
    ENVIRONMENT_PATTERN,
    VERSION_PATTERN,
    ServiceSpec,
    load_spec,
    validate_version,
)
from deployflow.strategy import StrategyName
from deployflow.tracking import repository
from flows.rollback import rollback
from flows.rollout import progressive_rollout
from tasks.complete import complete
from tasks.execute import discover_stable, execute, measure_baseline
from tasks.migrations import migration_checks
from tasks.notify import notify_and_prepare
from tasks.prechecks import github_token, pre_deployment_check, publish_prechecks
from tasks.reconcile import DeployInProgress, reconcile_interrupted
from tasks.strategy import choose_strategy_task
from tasks.tracking import session
from tasks.verify import post_deploy_verification


@task(name="load-spec", cache_policy=NO_CACHE)
def load_service_spec(spec_path: str, version: str) -> ServiceSpec:
    """Read and validate the service spec and the version; every problem is named."""
    validate_version(version)
    spec = load_spec(spec_path)
    get_run_logger().info("spec %s: service %s", spec_path, spec.service)
    return spec


@task(name="record-start", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_start(
    spec: ServiceSpec,
    version: str,
    environment: str,
    previous: str | None,
    dry_run: bool,
    git_ref: str | None,
) -> int:
    """Create the deployment row before anything is touched."""
    run_id = flow_run.get_id()
    try:
        with session() as s:
            row = repository.create_deployment(
                s,
                service=spec.service,
                environment=environment,
                version=version,
                strategy="pending",
                previous_version=previous,
                dry_run=dry_run,
                git_ref=git_ref,
                flow_run_id=str(run_id) if run_id else None,
                status="running",
            )
            return row.id
    except IntegrityError:
        # The partial unique index: another real deploy of this service and environment started
        # in the same instant and won.
        raise DeployInProgress(
            f"another deploy of {spec.service} to {environment} started at the same time"
        ) from None


@task(name="promote", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def promote(spec: ServiceSpec, deployment_id: int, canary: Instance) -> None:
    """The canary becomes the stable server with all the traffic."""
    with session() as s:
        repository.update_deployment(s, deployment_id, canary_weight=100)
    build_router(spec).promote(canary)
    get_run_logger().info("promoted %s to stable", canary.version)


@task(name="retire-previous", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def retire_previous(spec: ServiceSpec, previous: Instance) -> None:
    """Stop the old version once the new one is verified."""
    build_target(spec).stop(previous.version)
    get_run_logger().info("stopped previous version %s", previous.version)


def run_pre_checks(
    spec: ServiceSpec, version: str, environment: str, git_ref: str | None
) -> list[dict[str, Any]]:
    """Step 1: every gate as its own task, concurrently; the table becomes an artifact."""
    if spec.pre_checks is None:
        reason = "the spec has no pre_checks section"
        return [{"step": "pre_checks", "name": "pre_checks", "status": "skipped", "detail": reason}]
    with session() as s:
        deployed = repository.last_successful(s, spec.service, environment)
    ctx = CheckContext(
        version=version,
        new_ref=git_ref or "HEAD",
        previous_ref=deployed.git_ref if deployed else None,
        github_token=github_token(spec.pre_checks),
    )
    futures = [
        pre_deployment_check.submit(kind, spec.pre_checks, ctx)
        for kind in planned_checks(spec.pre_checks)
    ]
    results = [f.result() for f in futures]
    publish_prechecks(PreCheckReport(results=results), spec.service)
    rows = []
    for r in results:
        record = r.to_record()
        detail = " ".join(x for x in (r.figure, r.reason) if x) or record["status"]
        rows.append({"step": "pre_checks", **record, "detail": detail})
    return rows


def _finish(outcome: ReleaseOutcome) -> State[dict[str, Any]]:
    complete(outcome)
    data = outcome.to_dict()
    if outcome.status == "succeeded":
        return Completed(message=f"{outcome.version} succeeded", data=data)
    return Failed(message=f"{outcome.version} {outcome.status}: {outcome.message}", data=data)


@flow(
    name="deploy",
    flow_run_name="deploy {version} to {environment}",
    validate_parameters=True,
)
def deploy(
    spec_path: str,
    version: Annotated[str, Field(pattern=VERSION_PATTERN)],
    environment: Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)] = "sandbox",
    strategy: StrategyName = "auto",
    dry_run: bool = False,
    git_ref: str | None = None,
) -> State[dict[str, Any]]:
    """Release one version of a service, rolling back automatically when it misbehaves.

    Args:
        spec_path: Path of the service spec YAML file on the machine that runs the flow.
        version: The version to release (letters, digits, '.', '_', '+', '-').
        environment: Where it goes (sandbox, staging, production...); recorded with the run.
        strategy: 'auto' uses the spec's strategy; 'canary' or 'direct' override it.
        dry_run: Run the checks and plan the release without starting anything or moving traffic.
        git_ref: Commit or ref being released, in the service checkout (default HEAD); the
            changelog check compares it with the ref of the version deployed now.
    """
    logger = get_run_logger()
    spec = load_service_spec(spec_path, version)
    run_id = flow_run.get_id()
    reconciled = reconcile_interrupted(spec, environment, str(run_id) if run_id else None)
    stable = discover_stable(spec)
    outcome = ReleaseOutcome(
        service=spec.service,
        environment=environment,
        version=version,
        status="aborted",
        strategy="pending",
        previous_version=stable.version if stable else None,
        dry_run=dry_run,
    )
    outcome.flow_run_id = str(run_id) if run_id else None
    if reconciled:
        outcome.message = "; ".join(reconciled)
    if spec.pre_checks is not None:
        # Record the commit, not a moving name like HEAD: the next deploy compares against it.
        git_ref = resolve_commit(git_ref or "HEAD", spec.pre_checks.checkout) or git_ref
    outcome.deployment_id = record_start(
        spec, version, environment, outcome.previous_version, dry_run, git_ref
    )
    if stable is not None and stable.version == version:
        # Idempotent: re-running a pipeline for the version that is live is not an error.
        outcome.status = "succeeded"
        outcome.message = f"{version} already serves all the traffic: nothing to deploy"
        return _finish(outcome)

    # Steps 1 and 2 run concurrently: neither touches traffic.
    migration_future = migration_checks.submit(spec)
    outcome.checks = run_pre_checks(spec, version, environment, git_ref)
    outcome.checks += migration_future.result()
    failed = blocking_checks(outcome.checks)
    if failed:
        outcome.message = "blocked before any traffic moved: " + "; ".join(
            f"{c['name']} {c['status']} ({c['detail']})" for c in failed
        )
        logger.error(outcome.message)
        return _finish(outcome)

    plan = choose_strategy_task(spec, strategy, stable is not None)
    outcome.strategy, outcome.strategy_rationale = plan.kind, plan.rationale
    with session() as s:
        repository.update_deployment(s, outcome.deployment_id, strategy=plan.kind)
    plan_text = f"{plan.kind} {'/'.join(f'{w}%' for w in plan.steps)} ({plan.rationale})"
    outcome.notifications = notify_and_prepare(spec, version, environment, plan)

    if dry_run:
        outcome.status = "succeeded"
        outcome.message = f"dry run: checks passed, plan {plan_text}; nothing was started"
        return _finish(outcome)

    try:
        outcome.baseline_p95_seconds = measure_baseline(spec, stable) if stable else None
    except Exception as exc:
        outcome.message = f"blocked before any traffic moved: {exc}"
        return _finish(outcome)

    try:
        canary: Instance = execute(spec, version)["instance"]
    except Exception as exc:
        outcome.status = "failed"
        outcome.message = f"{version} did not start: {exc}"
        return _finish(outcome)

    trigger: RollbackInfo | None = None
    last_measurements: list[dict[str, Any]] = []
    try:
        stages = progressive_rollout(
            spec, outcome.deployment_id, plan, stable, canary, outcome.baseline_p95_seconds
        )
        outcome.stages = [s.to_dict() for s in stages]
        last = stages[-1]
        last_measurements = [m.to_dict() for m in last.measurements]
        trigger = stage_trigger(last)
        if trigger is None:
            promote(spec, outcome.deployment_id, canary)
            report = post_deploy_verification(spec, canary, outcome.baseline_p95_seconds)
            outcome.verification = [c.to_dict() for c in report.checks]
            trigger = verification_trigger(report)
    except Exception as exc:  # a broken step must still leave traffic on a healthy version
        logger.exception("rollout step failed")
        trigger = RollbackInfo(None, None, "error", None, None, f"rollout step failed: {exc}")

    if trigger is None:
        if stable is not None:
            try:
                retire_previous(spec, stable)
            except Exception:  # the release is done; a leftover old process is only untidy
                logger.exception("could not stop the previous version %s", stable.version)
        outcome.status = "succeeded"
        outcome.message = f"{version} serves all the traffic and passed verification"
        return _finish(outcome)

    if stable is None:
        outcome.status = "failed"
        outcome.message = f"{trigger.reason}; no previous version to roll back to"
        return _finish(outcome)

    try:
        outcome.rollback = rollback(
            spec, stable, canary, trigger, outcome.baseline_p95_seconds, last_measurements
        )
    except Exception as exc:
        logger.exception("rollback failed")
        outcome.rollback = trigger
        outcome.status = "failed"
        outcome.message = f"ROLLBACK FAILED ({exc}) after: {trigger.reason}"
        return _finish(outcome)
    outcome.status = "rolled_back" if outcome.rollback.verified else "failed"
    outcome.message = f"rolled back to {stable.version}: {trigger.reason}"
    return _finish(outcome)
