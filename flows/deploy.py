"""The deploy flow: one release of one service through the nine steps.

``deploy`` reads the spec once and builds the run's backends once (``connect``), the audiences of
its story among them; ``release`` then sequences the steps, handing each task the one collaborator
it needs:

1 pre-deployment checks and 2 migration checks (concurrently), 3 strategy, 4 notify and prepare,
5 execute, 6 progressive rollout, 7 post-deploy verification, 8 rollback (only when a verdict asks
for it), 9 complete. Decisions come from the core; this module only sequences steps and reacts to
their verdicts. What happened is recorded once (``Backends.story``) and told by every audience.
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import State, flow
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import Field

from blocks.service_spec import ServiceSpecBlock
from deployflow.backends import Backends
from deployflow.fencing import FencedRouter, FencedTarget
from deployflow.notify.evidence import StorySources
from deployflow.providers.base import Instance
from deployflow.release import (
    ReleaseOutcome,
    blocked_message,
    blocking_checks,
    run_name,
)
from deployflow.spec import ENVIRONMENT_PATTERN, VERSION_PATTERN, ServiceSpec, SpecError
from deployflow.story import Deploy, Ended, Started
from deployflow.strategy import StrategyName, risk_decides
from deployflow.tracking.lease import Lease
from flows.deploy_steps import (
    ReleaseRequest,
    announce,
    begin,
    dry_run_plan,
    ended,
    gates,
    interrupted,
    on_call_gate,
    one_deploy_at_a_time,
    outcome_dashboard,
    roll_back,
    roll_out_and_verify,
    schema_gate,
    start_new_version,
    stopped_outside_a_stage,
    story_sources,
    succeeded,
)
from flows.outcome_state import final_state, refused_state
from tasks.complete import complete
from tasks.connect import connect_backends, load_service_spec
from tasks.live import live_checks
from tasks.prefect_api import prefect_api_watch
from tasks.story import write_report
from tasks.strategy import assess_risk_task, choose_strategy_task
from tasks.tracking import record_plan

__all__ = ["OUTCOMES_REACHED", "ReleaseRequest", "deploy", "finish", "release"]

# A run sent without an environment (the form proposes none: a team's own service must never be
# recorded, locked and judged as another environment's, the local demo's sandbox included).
NO_ENVIRONMENT = SpecError(
    "parameters",
    [("environment", "name the environment this deploy goes to (production, staging, sandbox...)")],
)

# The outcome of every deploy this process finished, newest last (see ``finish``).
OUTCOMES_REACHED: list[dict[str, Any]] = []


def deploy_run_name() -> str:
    """The run's name: service, version and environment (``deploy shop v2 to production``), the
    service read from the chosen block or the spec file's ``service`` key."""
    parameters = flow_run.parameters
    return run_name(
        parameters.get("service"),
        parameters.get("spec_path"),
        str(parameters.get("version") or "?"),
        str(parameters.get("environment") or "?"),
    )


@flow(
    name="deploy",
    flow_run_name=deploy_run_name,
    validate_parameters=True,
)
def deploy(
    version: Annotated[str, Field(pattern=VERSION_PATTERN)],
    spec_path: str | None = None,
    service: ServiceSpecBlock | None = None,
    environment: Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)] | None = None,
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
        environment: Where it goes (production, staging, sandbox...); recorded with the run.
            No default, as for the service: a run without one ends at once, saying so.
        strategy: 'auto' follows the spec (a fixed kind, a per-environment pin, or the measured
            risk); 'canary', 'direct' or 'blue-green' override it.
        dry_run: Run the checks and plan the release without starting anything or moving traffic.
        git_ref: Commit or ref being released, in the service checkout (default HEAD); the
            changelog check compares it with the ref of the version deployed now.
        tracking_block: Name of the deployflow tracking database block; empty uses
            DEPLOYFLOW_DATABASE_URL or the local SQLite file of the machine running the flow.
    """
    loaded = load_service_spec(spec_path, version, service)
    if isinstance(loaded, SpecError):
        return refused_state(loaded)
    if environment is None:
        return refused_state(NO_ENVIRONMENT)
    spec = loaded.for_environment(environment)
    run_id = flow_run.get_id()
    request = ReleaseRequest(
        version, environment, strategy, dry_run, git_ref, str(run_id) if run_id else None
    )
    backends = connect_backends(spec, tracking_block, environment)
    try:
        # A deploy that loses the Prefect API goes on without it (tasks.prefect_api).
        with prefect_api_watch(), one_deploy_at_a_time(spec, request, backends.ledger):
            return finish(
                release(spec, backends, request),
                backends,
                story_sources(spec, backends),
                spec.notifications.dashboard_url,
            )
    finally:
        backends.close()  # e.g. the github-actions target's HTTP clients


def finish(
    outcome: ReleaseOutcome,
    backends: Backends,
    story: StorySources | None = None,
    spec_dashboard: str | None = None,
) -> State[Any]:
    """Step 9: record the outcome, write the report (with ``story``: charts, breakdown, log,
    commits), tell every audience how it ended (the outcome's dashboard link covers the deploy's
    whole time range), then the run's final state (``final_state``). An outcome the tracking
    database would not take (``complete`` kept trying for one lease period) still ends the run
    with the status it reached, its message saying the record is missing."""
    # Quoted: the outcome holds the subflows' results, which Prefect would otherwise record as
    # flow-run inputs of this task (which the UI's Task Runs tab cannot show).
    unrecorded = complete(quote(outcome), backends.ledger, incident_artifact=story is None)  # type: ignore[call-overload]
    if unrecorded is not None:
        # Said truthfully: what the deploy did stands; only its record is missing.
        outcome.message = (
            f"{outcome.message or outcome.status}; its outcome could not be recorded in the "
            f"tracking database ({unrecorded}): the next deploy reconciles its row"
        )
    elif story is not None and outcome.deployment_id is not None and not outcome.dry_run:
        write_report(backends.ledger, outcome.deployment_id, quote(story))  # type: ignore[call-overload]
    backends.story.record(Ended(outcome, outcome_dashboard(outcome, spec_dashboard)))
    # Kept in this process too: if the Prefect API is gone by now, the run's final state cannot
    # be recorded and the flow call fails, but the caller still reports what the deploy reached.
    OUTCOMES_REACHED.append(outcome.to_dict())
    return final_state(outcome)


def release(spec: ServiceSpec, b: Backends, req: ReleaseRequest) -> ReleaseOutcome:
    """The nine steps. Returns the outcome; step 9 (recording it) is the caller's.

    From the moment its row exists until it returns, the deploy holds a lease in the tracking
    database, so a later deploy knows whether this one is alive.
    """
    outcome, stable = begin(spec, b, req)
    b.story.record(Started(Deploy.of(outcome)))
    with Lease(b.ledger, outcome.require_id()) as lease:
        # Every traffic move, start and stop from here carries the lease (the fencing token):
        # a process that wakes after losing it acts on nothing.
        fenced = b.model_copy(
            update={
                "router": FencedRouter(b.router, lease.check, lease.check_restore, stable),
                "target": FencedTarget(b.target, lease.check, lease.check_restore),
            }
        )
        try:
            return steps(spec, fenced, req, outcome, stable)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, a cancellation
                # The caller (the CLI) reports what was reached; the run is being stopped.
                stopped_outside_a_stage(fenced, outcome, stable, exc)
                OUTCOMES_REACHED.append(outcome.to_dict())
            raise


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
    refused = schema_gate(spec, outcome, plan)  # before anything starts or any traffic moves
    if refused is not None:
        return ended(outcome, "aborted", refused)

    roster = announce(spec, b, outcome, plan)  # step 4
    if req.dry_run:
        tried = live_checks(b, spec.analysis.baseline_window)  # the spec tried on what runs now
        if not tried.passed:
            return ended(outcome, "aborted", f"dry run: {tried.summary()}; nothing was started")
        return ended(outcome, "succeeded", dry_run_plan(spec, b, plan, stable))
    refusal = on_call_gate(spec, b, req, roster, outcome.deployment_id)
    if refusal is not None:
        return ended(outcome, "aborted", f"{refusal}; nothing was started")

    outcome.started_new_version = True
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
        return succeeded(b, outcome, stable, spec.keep_previous)
    return roll_back(spec, b, outcome, stable, canary, trigger)  # step 8
