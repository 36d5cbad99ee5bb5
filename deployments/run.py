"""Run the deploy flow in this process and report its outcome: shared by the CLI and the demo.

Exit codes: 0 succeeded, 3 rolled back, 1 failed or aborted, 2 bad input (nothing was started),
130 / 143 interrupted by SIGINT / SIGTERM (traffic put back on the stable version first; with
``--json`` the object says what was reached: ``deployments.endings``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blocks.service_spec import ServiceSpecBlock

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_ROLLED_BACK = 0, 1, 2, 3
EXIT_INTERRUPTED = 128  # plus the signal number, as shells report it


def ui_url(flow_run_id: str | None) -> str | None:
    """Where the run is shown in the Prefect UI, when a server with a UI is configured."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    if not base or not flow_run_id:
        return None
    return f"{str(base).rstrip('/')}/runs/flow-run/{flow_run_id}"


def reached_outcomes() -> list[dict[str, Any]]:
    """The outcomes deploys in this process reached, newest last (``flows.deploy``'s record,
    which holds an interrupted deploy's too); empty before the flow module is loaded."""
    module = sys.modules.get("flows.deploy")
    return list(getattr(module, "OUTCOMES_REACHED", [])) if module is not None else []


def run_deploy(
    spec_path: str | None,
    version: str,
    environment: str,
    strategy: str,
    dry_run: bool,
    tracking_block: str | None = None,
    service: ServiceSpecBlock | None = None,
) -> dict[str, Any]:
    """Run the deploy flow in this process and return its outcome as a dict; the service is the
    spec file at ``spec_path`` or the saved ``service`` block."""
    # Without PREFECT_API_URL, Prefect starts a temporary local server; its first start migrates a
    # fresh SQLite database, which takes longer than Prefect's 20 s default on a busy laptop.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.deploy import OUTCOMES_REACHED, deploy
    from tasks.prefect_api import prefect_api_watch

    reached_before = len(OUTCOMES_REACHED)
    # Watched from out here too, so that the run's final state is not retried for a minute when
    # the API is gone (tasks.prefect_api).
    watch = prefect_api_watch()
    try:
        with watch as seen:
            state = deploy(
                spec_path=spec_path,
                version=version,
                environment=environment,
                strategy=strategy,
                dry_run=dry_run,
                tracking_block=tracking_block,
                service=service,
                return_state=True,
            )
    except Exception as exc:  # the flow never ran, or the Prefect API went away meanwhile
        reached = [o for o in OUTCOMES_REACHED[reached_before:] if o.get("version") == version]
        if reached:
            kept = without_its_final_state(reached[-1], exc, lost=seen.lost_at_end)
            run_id = kept.get("flow_run_id")
            kept["ui_url"] = ui_url(str(run_id) if run_id else None)
            return kept
        return {
            "status": "failed",
            "version": version,
            "strategy": None,
            "stages": [],
            "rollback": None,
            "message": f"the deploy flow could not run: {type(exc).__name__}: {exc}"[:2000],
            "flow_run_id": None,
            "ui_url": None,
        }
    from deployflow.release import outcome_of

    data = state.result(raise_on_failure=False)
    result: dict[str, Any]
    outcome = outcome_of(data)
    if outcome is not None:
        result = outcome
    else:
        # The flow stopped before a release began: a refusal (another deploy is running), a spec
        # or block problem, a backend that cannot be reached. Say what it was.
        what = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else str(data)
        result = {
            "status": "failed",
            "version": version,
            "strategy": None,
            "stages": [],
            "rollback": None,
            "message": f"the deploy did not start: {what}"[:2000],
            "flow_run_id": str(state.state_details.flow_run_id),
        }
    run_id = result.get("flow_run_id")
    result["ui_url"] = ui_url(str(run_id) if run_id else None)
    if seen.lost_at_end:
        result["prefect_api_lost"] = True
    return result


def exit_at_once_if_prefect_is_gone(result: dict[str, Any], code: int) -> None:
    """A deploy or rollback that ended with the Prefect API lost (``prefect_api_lost``) exits
    now with ``code``, its outcome printed and recorded in the tracking database: at interpreter
    exit, Prefect's background senders would wait, with no bound, to deliver what they hold to
    the API that is gone (its events worker spends about 7 s trying per queued event)."""
    if not result.get("prefect_api_lost"):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def exit_for(status: str) -> int:
    """The process exit code for a deploy outcome status."""
    return {"succeeded": EXIT_OK, "rolled_back": EXIT_ROLLED_BACK}.get(status, EXIT_FAILED)


def print_outcome(result: dict[str, Any]) -> None:
    """Print a deploy outcome (from ``run_deploy``) for people: one line per stage."""
    from deployflow.figures import measured

    print(f"{result.get('version', '?')}: {result['status']} ({result.get('strategy')})")
    for note in result.get("reconciled", []):
        print(f"  before this deploy: {note}")
    for stage in result.get("stages", []):
        values = stage["values"]
        figures = measured(
            values.get("error_rate"), values.get("p95_seconds"), values.get("requests")
        )
        print(
            f"  stage {stage['index'] + 1} {stage['weight']:>3}%: {stage['verdict']:<9} {figures}"
        )
    if result.get("rollback"):
        print(f"  rollback: {result['rollback']['reason']}")
    if result.get("message"):
        print(f"  {result['message']}")
    if result.get("deployment_id") is not None and result["status"] in ("rolled_back", "failed"):
        print(f"  incident report: deployflow report {result['deployment_id']}")
    if result.get("ui_url"):
        print(f"  Prefect UI: {result['ui_url']}")
    if result.get("prefect_api_lost"):
        print(
            "  the Prefect API did not answer at the end: this outcome is in the tracking "
            "database (deployflow history), not in Prefect"
        )


def run_rollback(
    environment: str,
    *,
    spec_path: str | None = None,
    service: ServiceSpecBlock | None = None,
    version: str | None = None,
    reason: str = "",
    requested_by: str | None = None,
    tracking_block: str | None = None,
) -> dict[str, Any]:
    """Run the manual-rollback flow in this process; its result as a dict (``refused`` True when
    nothing was started)."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.manual_rollback import ROLLBACKS_BEGUN, ROLLBACKS_REACHED, manual_rollback
    from tasks.prefect_api import prefect_api_watch

    reached_before, begun_before = len(ROLLBACKS_REACHED), len(ROLLBACKS_BEGUN)
    # Watched from out here too, so that the run's final state is not retried for a minute when
    # the API is gone (tasks.prefect_api).
    watch = prefect_api_watch()
    try:
        with watch as seen:
            state = manual_rollback(
                environment=environment,
                service=service,
                spec_path=spec_path,
                version=version,
                reason=reason,
                requested_by=requested_by,
                tracking_block=tracking_block,
                return_state=True,
            )
    except Exception as exc:  # the flow never ran, or the Prefect API went away meanwhile
        return _rollback_without_its_state(
            exc,
            ROLLBACKS_REACHED[reached_before:],
            begun=len(ROLLBACKS_BEGUN) > begun_before,
            lost=seen.lost_at_end,
        )
    from deployflow.release import outcome_of

    data = state.result(raise_on_failure=False)
    result = outcome_of(data)
    if result is None:
        what = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else str(data)
        result = {
            "status": "failed",
            "refused": False,
            "message": f"the rollback did not start: {what}"[:2000],
            "flow_run_id": str(state.state_details.flow_run_id),
        }
    run_id = result.get("flow_run_id") or str(state.state_details.flow_run_id)
    result["flow_run_id"] = run_id
    result["ui_url"] = ui_url(str(run_id) if run_id else None)
    return result


def without_its_final_state(
    reached: dict[str, Any], exc: Exception, *, lost: bool
) -> dict[str, Any]:
    """The outcome a deploy or rollback reached (recorded in the tracking database) whose flow
    call then failed: only its final state could not be told to Prefect, and its message says
    so; ``lost``: the Prefect API did not answer at the end (``prefect_api_lost``)."""
    kept = dict(reached)
    kept["message"] = (
        f"{kept.get('message') or ''} (its final state could not be recorded in Prefect: "
        f"{type(exc).__name__})"
    ).strip()
    if lost:
        kept["prefect_api_lost"] = True
    return kept


def _rollback_without_its_state(
    exc: Exception, reached: list[dict[str, Any]], *, begun: bool, lost: bool
) -> dict[str, Any]:
    """What to say of a rollback whose flow call failed: what it reached when it reached an
    outcome (recorded in the tracking database; only Prefect missed its final state), else
    whether anything can have been done."""
    from tasks.prefect_api import api_unreachable

    what = f"{type(exc).__name__}: {exc}"
    if reached:
        return without_its_final_state(reached[-1], exc, lost=lost or api_unreachable(exc))
    if begun:
        message = (
            f"the rollback did not reach its outcome: {what}; `deployflow status` says what "
            "serves now"
        )
    else:
        message = (
            f"the rollback flow could not run: {what}; nothing was started and no traffic moved "
            "(the rollback runs as a Prefect flow: start the Prefect server, or set "
            "PREFECT_API_URL to it, and run it again; `deployflow status` says what serves now)"
        )
    return {
        "status": "failed",
        "refused": False,
        "message": message[:2000],
        "flow_run_id": None,
        "ui_url": None,
    }


def rollback_exit(result: dict[str, Any]) -> int:
    """0: traffic is on the version asked for and it is healthy; 2: refused (nothing was started,
    no traffic moved); 1: anything else."""
    if result.get("refused"):
        return EXIT_BAD_INPUT
    rollback = result.get("rollback")
    if result.get("status") == "rolled_back" and rollback and rollback.get("verified"):
        return EXIT_OK
    if result.get("status") == "succeeded" and rollback is None:
        return EXIT_OK  # a running deploy was asked to roll back and did
    return EXIT_FAILED


def print_rollback(result: dict[str, Any]) -> None:
    """A rollback's result for people."""
    print(f"{result.get('message') or result.get('status')}")
    if result.get("restore_seconds") is not None:
        print(f"  traffic moved in {result['restore_seconds'] * 1000:.0f} ms (one router call)")
    if result.get("deployment_id") is not None:
        print(f"  report: deployflow report {result['deployment_id']}")
    if result.get("ui_url"):
        print(f"  Prefect UI: {result['ui_url']}")
    if result.get("prefect_api_lost"):
        print(
            "  the Prefect API did not answer at the end: this rollback is in the tracking "
            "database (deployflow history), not in Prefect"
        )
