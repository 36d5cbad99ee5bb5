"""A person's rollback: return a service to its last good version (or a named one) at once, also
after a release succeeded (``deployflow rollback``, the ``rollback`` deployment's form).

The fast track: no pre-checks and no canary analysis. The version to return to is chosen by the
core (``deployflow.manual_rollback``) from the tracking database and the router; then it is started
(or reused while it still runs, e.g. kept warm by ``keep_previous``) and health-checked, all
traffic moves to it in one router call, it is verified as step 8 verifies a restore, and the bad
version is stopped: the automatic rollback subflow (``flows/rollback.py``) does those steps, with a
trigger that names who asked and why. The rollback is a row of the tracking database (strategy
``rollback``) and is told, reported and followed up like an automatic rollback.

A rollback never races a deploy of the same service: while one runs, it is asked to roll back at
its next look (``Ledger.request_rollback``) and waited for; then the rollback holds the same
Prefect concurrency limit and the same one-active-row guard of the tracking database as a deploy.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from prefect import State, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed
from prefect.utilities.annotations import quote
from pydantic import Field

from blocks.service_spec import ServiceSpecBlock
from deployflow.backends import Backends
from deployflow.error_words import in_words
from deployflow.manual_rollback import (
    MANUAL_METRIC,
    ROLLBACK_STRATEGY,
    SCHEMA_OK,
    choose_version,
    manual_headline,
    schema_allows,
)
from deployflow.polling import DeadlineExceeded, wait_for
from deployflow.providers.base import Instance
from deployflow.release import ReleaseNotSucceeded, ReleaseOutcome, Trigger
from deployflow.spec import ENVIRONMENT_PATTERN, VERSION_PATTERN, ServiceSpec, SpecError
from deployflow.story import Deploy, Ended
from deployflow.tracking.lease import Lease, lease_alive, lease_seconds
from deployflow.tracking.ledger import ConcurrentDeploy, Ledger, UnfinishedDeploy
from flows.deploy_steps import (
    ended,
    outcome_dashboard,
    retire_expired,
    run_url,
    signal_name,
    story_sources,
)
from flows.oncall import ConfirmationRefused, refuse
from flows.outcome_state import one_line, quiet_expected_endings, tag_this_run
from flows.rollback import rollback
from tasks.complete import complete
from tasks.concurrency import deploy_slot
from tasks.connect import connect_backends, load_service_spec
from tasks.execute import discover_stable, execute
from tasks.prefect_api import prefect_api_watch, run_subflow
from tasks.run_tags import OUTCOME_TAG_PREFIX
from tasks.story import write_report
from tasks.tracking import record_start

# How long a rollback waits for a running deploy it asked to roll back (its rollback is seconds;
# a deploy that does not look at its stage for this long is in a step without looks, such as a
# pause waiting for a person).
DEFAULT_WAIT_SECONDS = 600.0
# What each rollback this process ran had reached when a signal stopped it (the CLI's --json
# says it), newest last.
ROLLBACKS_INTERRUPTED: list[dict[str, Any]] = []
# The result of every rollback this process finished, newest last: if the Prefect API is gone by
# then, the run's final state cannot be recorded and the flow call fails, but the caller still
# reports what the rollback reached (as ``flows.deploy.OUTCOMES_REACHED`` for deploys).
ROLLBACKS_REACHED: list[dict[str, Any]] = []
# How many rollbacks this process began (the flow's body ran): a flow call that fails without
# one began never started anything.
ROLLBACKS_BEGUN: list[str] = []


@dataclass(frozen=True)
class RollbackRequest:
    """What a person asked for."""

    environment: str
    version: str | None = None
    reason: str = ""
    requested_by: str = "somebody"
    flow_run_id: str | None = None
    wait_seconds: float = DEFAULT_WAIT_SECONDS

    @property
    def headline(self) -> str:
        return manual_headline(self.requested_by, self.reason)


@dataclass
class RollbackResult:
    """The rollback's outcome; ``refused``: nothing was started and no traffic moved."""

    outcome: ReleaseOutcome
    refused: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = self.outcome.to_dict()
        data["refused"] = self.refused
        data["rolled_back_to"] = self.outcome.previous_version
        data["restore_seconds"] = (
            self.outcome.rollback.restore_seconds if self.outcome.rollback else None
        )
        data["ui_url"] = run_url(self.outcome.flow_run_id)
        return data

    @property
    def ok(self) -> bool:
        """Traffic is on the chosen version and it was verified healthy (or a deploy that was
        asked to roll back did it)."""
        if self.refused:
            return False
        if self.outcome.rollback is None:
            return self.outcome.status == "succeeded"
        return self.outcome.status == "rolled_back" and self.outcome.rollback.verified


@flow(
    name="manual-rollback",
    flow_run_name="rollback {environment}",
    validate_parameters=True,
)
def manual_rollback(
    environment: Annotated[str, Field(pattern=ENVIRONMENT_PATTERN)],
    service: ServiceSpecBlock | None = None,
    spec_path: str | None = None,
    version: Annotated[str | None, Field(pattern=VERSION_PATTERN)] = None,
    reason: str = "",
    requested_by: str | None = None,
    tracking_block: str | None = None,
) -> State[dict[str, Any]]:
    """Roll a service back now, skipping the checks and the canary analysis.

    Args:
        environment: Where (sandbox, staging, production...).
        service: The service, as a saved ServiceSpec block (the form lists them).
        spec_path: Path of the service spec YAML, when no block is chosen.
        version: The version to return to; empty: the last version that completed a release
            before the live one (rolled-back versions skipped).
        reason: Why, in a sentence: it is the rollback's trigger in every message and report.
        requested_by: Who asks (the CLI passes the login name); empty: the Prefect UI.
        tracking_block: Name of the deployflow tracking database block; empty uses
            DEPLOYFLOW_DATABASE_URL or the local SQLite file of the machine running the flow.
    """
    ROLLBACKS_BEGUN.append(environment)
    loaded = load_service_spec(spec_path, version or "rollback", service)
    if isinstance(loaded, SpecError):
        return _refused_by_spec(loaded)
    spec = loaded.for_environment(environment)
    run_id = flow_run.get_id()
    request = RollbackRequest(
        environment,
        version,
        reason,
        requested_by or f"{getpass.getuser()} (Prefect run)",
        str(run_id) if run_id else None,
    )
    backends = connect_backends(spec, tracking_block, environment)
    try:
        # A rollback that loses the Prefect API goes on without it, as a deploy does: traffic,
        # verification and the record are the router's and the tracking database's.
        with prefect_api_watch():
            result = finish_rollback(roll_back_now(spec, backends, request), spec, backends)
            ROLLBACKS_REACHED.append(result.to_dict())
            return final_rollback_state(result)
    finally:
        backends.close()


def roll_back_now(spec: ServiceSpec, b: Backends, req: RollbackRequest) -> RollbackResult:
    """Choose, wait out a running deploy (asking it to roll back), then roll back under the
    service's concurrency limit. Returns the result; recording its end is ``finish_rollback``'s."""
    logger = get_run_logger()
    live = discover_stable(b.router, b.target)
    running = running_deploys(b.ledger, spec.service, req.environment, req.flow_run_id)
    if running:
        settled = ask_running_deploys(b, spec, req, running, live)
        if settled is not None:
            return settled
        live = discover_stable(b.router, b.target)
    chosen = version_to_return_to(spec, b, req, live)
    if isinstance(chosen, RollbackResult):
        return chosen
    with deploy_slot(spec.service, req.environment, "wait", logger, req.flow_run_id):
        # Under the slot, so never beside a deploy that may be starting a kept version again.
        retire_expired(b, spec.service, req.environment)
        # The live version may have changed while the slot was waited for: choose again.
        live = discover_stable(b.router, b.target)
        chosen = version_to_return_to(spec, b, req, live)
        if isinstance(chosen, RollbackResult):
            return chosen
        assert live is not None
        return roll_back_from(spec, b, req, live, chosen)


def version_to_return_to(
    spec: ServiceSpec, b: Backends, req: RollbackRequest, live: Instance | None
) -> str | RollbackResult:
    """The version to return to, or the refused result when the rollback must not go on."""
    history = b.ledger.past_deploys(spec.service, req.environment)
    choice = choose_version(
        history,
        live.version if live is not None else None,
        req.version,
        service=spec.service,
        environment=req.environment,
    )
    message = choice.refusal
    if message is None and choice.target is not None:
        schema = schema_allows(
            choice.target, b.ledger.schema_history(spec.service, req.environment)
        )
        if schema != SCHEMA_OK:
            message = f"{choice.target} cannot run with the live database schema: {schema}"
    if message is None and choice.target is not None:
        get_run_logger().info(
            "rolling %s in %s back from %s to %s (%s)", spec.service, req.environment,
            choice.live, choice.target, "named" if req.version else "the last good version",
        )  # fmt: skip
        return choice.target
    outcome = _outcome(spec, req, choice.live or "none", None)
    return RollbackResult(ended(outcome, "aborted", f"refused: {message}"), refused=True)


def running_deploys(
    ledger: Ledger, service: str, environment: str, own: str | None
) -> list[UnfinishedDeploy]:
    """Real deploys of the service and environment running now with a live lease."""
    now = datetime.now(UTC)
    return [
        r
        for r in ledger.unfinished(service, environment, except_flow_run=own)
        if not r.ended and not r.dry_run and lease_alive(r.heartbeat_at, now, lease_seconds())
    ]


def ask_running_deploys(
    b: Backends,
    spec: ServiceSpec,
    req: RollbackRequest,
    running: list[UnfinishedDeploy],
    live: Instance | None,
) -> RollbackResult | None:
    """Ask each running deploy to roll back, and wait for it to end. Returns the result when
    that was the whole job (the deploy put traffic back on the version it found, which is what
    was asked for); None when the rollback must still be done (the deploy had finished first)."""
    logger = get_run_logger()
    for row in running:
        asked = b.ledger.request_rollback(row.deployment_id, req.requested_by, req.reason)
        logger.warning(
            "a deploy of %s %s to %s is running (flow run %s): %s",
            spec.service,
            row.version,
            req.environment,
            row.flow_run_id,
            "asked it to roll back at its next look; waiting for it"
            if asked
            else "it is ending; waiting for it",
        )
        if asked:
            answer_its_pause(row, req)
        deployment_id = row.deployment_id

        def ended_now(deployment_id: int = deployment_id) -> bool:
            return b.ledger.status_of(deployment_id) not in ("running", "pending")

        try:
            wait_for(
                ended_now,
                timeout=req.wait_seconds,
                interval=0.5,
                what=f"the end of the deploy of {row.version}",
            )
        except DeadlineExceeded:
            message = (
                f"refused: the deploy of {row.version} (flow run {row.flow_run_id}) was asked to "
                f"roll back and did not end within {req.wait_seconds:g} s (it may be waiting for "
                "a person at a pause); answer or cancel it, then roll back again"
            )
            outcome = _outcome(spec, req, row.version, None)
            return RollbackResult(ended(outcome, "aborted", message), refused=True)
    now = discover_stable(b.router, b.target)
    if (
        live is not None
        and now is not None
        and now.version == live.version
        and req.version in (None, now.version)
    ):
        versions = ", ".join(r.version for r in running)
        outcome = _outcome(spec, req, versions, now.version)
        statuses = {b.ledger.status_of(r.deployment_id) for r in running}
        # One that waited for its on-call confirmation ends before any traffic moved.
        did = "stopped before moving any traffic" if statuses == {"aborted"} else "did"
        message = (
            f"the deploy of {versions} in progress was asked to roll back and {did}; "
            f"{now.version} serves all the traffic"
        )
        return RollbackResult(ended(outcome, "succeeded", message))
    return None


def answer_its_pause(row: UnfinishedDeploy, req: RollbackRequest) -> None:
    """A deploy waiting at a pause (a stage's approval, a decision on an unproven stage, the
    on-call confirmation) looks at no stage: answer its form with a no, in the requester's name,
    so it rolls back (or ends before any traffic moved) now rather than at the pause's timeout.
    The request recorded just before names the reason. A deploy not waiting is left to see the
    request at its next look."""
    if row.flow_run_id is None:
        return
    logger = get_run_logger()
    try:
        answered = refuse(UUID(row.flow_run_id), f"{req.requested_by} (deployflow rollback)")
    except ConfirmationRefused:  # not waiting at a pause: its next look sees the request
        return
    except Exception as exc:  # the request stands; the wait below says if it was not heard
        logger.warning("could not answer the paused deploy's form: %s", in_words(exc))
        return
    logger.warning("answered the %s form of %s with a no", answered.form, answered.run_name)


def roll_back_from(
    spec: ServiceSpec, b: Backends, req: RollbackRequest, live: Instance, to: str
) -> RollbackResult:
    """The rollback itself, under the service's concurrency limit: its row, then the target
    started and healthy, then the rollback subflow (one router call, the bad version stopped,
    the restored version verified, people told)."""
    outcome = _outcome(spec, req, live.version, to)
    outcome.strategy_rationale = req.headline
    try:
        outcome.deployment_id = record_start(b.ledger, outcome)
    except ConcurrentDeploy as exc:
        return RollbackResult(ended(outcome, "aborted", f"refused: {exc}"), refused=True)
    # Not told as a deploy that starts (no announcement, no thread: a rollback is one notice, as
    # an automatic one); the story's later events are about this row.
    b.story.deploy = Deploy.of(outcome)
    get_run_logger().warning(
        "rolling %s in %s back from %s to %s: %s",
        spec.service, req.environment, live.version, to, req.headline,
    )  # fmt: skip
    with Lease(b.ledger, outcome.require_id()), told_if_interrupted(b, outcome, live, to):
        try:
            target = execute(b.target, to)
        except Exception as exc:
            return RollbackResult(
                ended(
                    outcome,
                    "failed",
                    f"{to} did not start: {in_words(exc)}; traffic stays on {live.version}",
                )
            )
        trigger = Trigger(
            stage=None,
            weight=None,
            metric=MANUAL_METRIC,
            value=None,
            threshold=None,
            reason=req.headline,
            headline=req.headline,
        )
        outcome.rollback = run_subflow(
            rollback,
            b,
            outcome.require_id(),
            target,
            live,
            trigger,
            spec.analysis,
            spec.smoke,
            None,
            [],
        )
    record = outcome.rollback
    if record.error is None:
        release_kept(b.ledger, spec.service, req.environment, to)
    if record.error is not None:
        return RollbackResult(ended(outcome, "failed", f"ROLLBACK FAILED ({record.error})"))
    # Traffic is on the version asked for either way; the status says so (and makes it the live
    # version for the tracking database), the message and the exit code say if it is unhealthy.
    message = f"rolled back to {to}: {req.headline}"
    if not record.verified:
        message += f"; {to} is NOT verified healthy"
    return RollbackResult(ended(outcome, "rolled_back", message))


@contextmanager
def told_if_interrupted(
    b: Backends, outcome: ReleaseOutcome, live: Instance, to: str
) -> Iterator[None]:
    """A signal (Ctrl-C, SIGTERM) stopping the rollback: which version the router serves is
    read (nothing is moved: the switch is one router call, made or not) and kept in
    ``ROLLBACKS_INTERRUPTED`` with the row's id; the row stays open for the next deploy."""
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, Exception):
            serving = serving_now(b, (live.version, to))
            outcome.interruption = {
                "signal": signal_name(exc),
                "traffic_restored": None if serving is None else serving == to,
                "serving": serving,
            }
            ended(outcome, "failed", f"interrupted ({signal_name(exc)}); serving: {serving}")
            ROLLBACKS_INTERRUPTED.append(outcome.to_dict())
        raise


def serving_now(b: Backends, versions: tuple[str, ...]) -> str | None:
    """Which of ``versions`` has all the traffic as the router says now, None when none does
    or it cannot be read; never raises."""
    try:
        state = b.router.state()
        running = {i.address: i.version for i in b.target.instances()}
    except Exception:
        return None
    version = running.get(state.stable or "")
    return version if state.canary_weight == 0 and version in versions else None


def release_kept(ledger: Ledger, service: str, environment: str, version: str) -> None:
    """``version`` serves again: it is no longer a version kept warm by ``keep_previous``, which
    a later sweep would stop at the end of its window. Best effort: the sweep also sees it
    serving and never stops it."""
    try:
        for kept in ledger.kept_versions(service, environment):
            if kept.version == version:
                ledger.kept_version_stopped(kept.deployment_id, "serves again after a rollback")
    except Exception:
        get_run_logger().exception("could not record that %s serves again", version)


def _outcome(
    spec: ServiceSpec, req: RollbackRequest, bad: str, target: str | None
) -> ReleaseOutcome:
    return ReleaseOutcome(
        service=spec.service,
        environment=req.environment,
        version=bad,
        strategy=ROLLBACK_STRATEGY,
        previous_version=target,
        flow_run_id=req.flow_run_id,
        started_at=datetime.now(UTC),
    )


def finish_rollback(result: RollbackResult, spec: ServiceSpec, b: Backends) -> RollbackResult:
    """Record the end, write the incident report, tell everybody how it ended."""
    outcome = result.outcome
    logger = get_run_logger()
    if outcome.deployment_id is None:  # refused, or a deploy did it: no row of its own
        logger.warning("%s", outcome.message)
        return result
    complete(quote(outcome), b.ledger, incident_artifact=False)  # type: ignore[call-overload]
    write_report(b.ledger, outcome.deployment_id, quote(story_sources(spec, b)))  # type: ignore[call-overload]
    b.story.record(Ended(outcome, outcome_dashboard(outcome, spec.notifications.dashboard_url)))
    return result


def final_rollback_state(result: RollbackResult) -> State[dict[str, Any]]:
    """Completed when traffic is on the version asked for and it is healthy; Failed otherwise
    (refused, not started, not restored, not verified), tagged ``outcome:<label>``."""
    outcome = result.outcome
    data = result.to_dict()
    label = "refused" if result.refused else ("rolled-back" if result.ok else "rollback-failed")
    tag_this_run(f"{OUTCOME_TAG_PREFIX}{label}")
    if result.ok:
        return Completed(message=outcome.message, data=data)
    get_run_logger().error(
        "rollback of %s in %s: %s", outcome.service, outcome.environment, one_line(outcome.message)
    )
    quiet_expected_endings()
    return Failed(message=one_line(outcome.message), data=ReleaseNotSucceeded(data))


def _refused_by_spec(error: SpecError) -> State[Any]:
    line = f"{error.source}: " + "; ".join(f"{path}: {problem}" for path, problem in error.problems)
    tag_this_run(f"{OUTCOME_TAG_PREFIX}refused")
    get_run_logger().error("rollback refused, nothing was started: %s", one_line(line))
    quiet_expected_endings()
    data = {"status": "aborted", "refused": True, "message": f"refused: {one_line(line)}"}
    return Failed(message=data["message"], data=ReleaseNotSucceeded(data))
