"""The ``deployflow`` command line.

Exit codes: 0 succeeded, 3 rolled back, 1 failed or aborted, 2 bad input (nothing was started).

The CLI lives with the deployments because it is one more way the flows are offered to people:
``deploy`` runs the same Prefect flow the UI, schedules and API trigger.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployflow.spec import (
    SpecError,
    describe_spec_path,
    load_spec,
    read_spec_text,
    reads_sandbox_variables,
    validate_environment,
    validate_version,
)
from deployflow.strategy import STRATEGY_CHOICES
from deployments import endings
from deployments.init import add_parser as add_init_parser
from deployments.run import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    exit_at_once_if_prefect_is_gone,
    exit_for,
    print_outcome,
    reached_outcomes,
    run_deploy,
)

if TYPE_CHECKING:
    from blocks.service_spec import ServiceSpecBlock

# deployflow.tracking.models.DeploymentStatus, without importing SQLAlchemy for --help (a unit
# test holds them equal).
DEPLOYMENT_STATUSES = ("pending", "running", "succeeded", "rolled_back", "failed", "aborted")

# Prefect's block document names: lowercase letters, digits and dashes.
BLOCK_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class BadInput(Exception):
    """A command-line value that is not allowed; the message names it (``FIELD: what is
    allowed``), or ``field`` does when the message cannot start with it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def problems(self) -> list[dict[str, str | None]]:
        if self.field is None:
            return [endings.split_field(str(self))]
        return [endings.problem(self.field, str(self))]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 too; keep one message format
        self.print_usage(sys.stderr)
        print(f"deployflow: error: {message}", file=sys.stderr)
        endings.emit_if_wanted(endings.bad_input(message, endings.argparse_problems(message)))
        raise SystemExit(EXIT_BAD_INPUT)


def _print_problems(error: SpecError) -> None:
    print(f"invalid: {error.source}", file=sys.stderr)
    for path, message in error.problems:
        print(f"  {path}: {message}", file=sys.stderr)
    endings.emit_if_wanted(endings.spec_problems(error.source, error.problems))


def _bad_input(error: BadInput) -> int:
    print(f"deployflow: error: {error}", file=sys.stderr)
    endings.emit_if_wanted(endings.bad_input(str(error), error.problems()))
    return EXIT_BAD_INPUT


class _Terminated(BaseException):
    """SIGTERM before Prefect is loaded (the command is still checking its input)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signal = signum


def _raise_termination(signum: int, frame: object) -> None:
    # Once a flow may run, Prefect's own exception: its engine hands SIGTERM back to this
    # handler after the flow handled it, and expects to see its kind propagate.
    exceptions = sys.modules.get("prefect.exceptions")
    if exceptions is not None:
        raise exceptions.TerminationSignal(signal=signum)
    raise _Terminated(signum)


def _interruption(exc: BaseException) -> bool:
    """Ctrl-C or SIGTERM (ours, or Prefect's TerminationSignal); checked without importing
    Prefect, which a command that only checks its input never loads."""
    if isinstance(exc, KeyboardInterrupt | _Terminated):
        return True
    exceptions = sys.modules.get("prefect.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.TerminationSignal)


@contextlib.contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """SIGTERM raises (as Ctrl-C does) for as long as a command runs a flow, so the command
    ends its own way: traffic put back by the flow, the outcome reached said (one JSON object
    with --json), exit 143. Prefect's own handler takes over while its flow runs and hands the
    signal back to this one once the flow has handled it."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_termination)
    except ValueError:  # not the main thread (a test calling main): nothing to install
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted_code(exc: BaseException) -> tuple[str, int]:
    """The signal's name and the exit code for it (128 + its number, as shells report)."""
    number = getattr(exc, "signal", None)
    if isinstance(exc, KeyboardInterrupt) or not isinstance(number, int):
        number = signal.SIGINT
    return signal.Signals(number).name, EXIT_INTERRUPTED + int(number)


def cmd_validate(args: argparse.Namespace) -> int:
    from deployments.validate import cmd_validate as validate

    return validate(args)


def _saved_service(name: str) -> ServiceSpecBlock:
    """The ServiceSpec block saved as ``name`` on the Prefect server this process talks to.

    Raises:
        BadInput: The name is not a block name, or no such block is saved there.
    """
    if not BLOCK_NAME.fullmatch(name):
        raise BadInput(
            f"--service: {name!r} is not a block name (lowercase letters, digits and '-')"
        )
    from blocks.loader import load_block
    from blocks.service_spec import ServiceSpecBlock
    from deployflow.providers.base import BackendConfigError

    try:
        return load_block(ServiceSpecBlock, name)
    except BackendConfigError as exc:
        raise BadInput(f"--service: {exc}") from None


def cmd_deploy(args: argparse.Namespace) -> int:
    with _sigterm_as_exception():
        reached_before = len(reached_outcomes())
        try:
            return _deploy(args)
        except BaseException as exc:
            if not _interruption(exc):
                raise
            # The flow already put traffic back on the stable version (or recorded why it
            # could not, for the next deploy to reconcile); see the run's log.
            name, code = _interrupted_code(exc)
            print(f"deployflow: deploy of {args.version} interrupted ({name})", file=sys.stderr)
            reached = [
                o for o in reached_outcomes()[reached_before:] if o.get("version") == args.version
            ]
            ending = endings.interrupted(
                name,
                code,
                reached[-1] if reached else None,
                what=f"the deploy of {args.version}",
                version=args.version,
            )
            if reached:
                print(f"  {ending['message']}", file=sys.stderr)
            endings.emit_if_wanted(ending)
            return code


def deploy_environment(given: str | None, spec_text: str) -> str:
    """Where a deploy goes: ``--environment`` when given; else ``sandbox`` for a spec that reads
    the sandbox's variables (the sandbox examples); else none, which is bad input. A spec has no
    environment of its own (one spec serves several), so a team's deploy without the flag must
    not be recorded as a sandbox one.

    Raises:
        BadInput: No ``--environment`` and the spec is not a sandbox spec.
    """
    if given is not None:
        return given
    if reads_sandbox_variables(spec_text):
        return "sandbox"
    raise BadInput(
        "--environment: required: name where this deploy goes, e.g. --environment production "
        "(letters, digits, '.', '_', '-'); only a sandbox spec, one that reads the "
        "DEPLOYFLOW_SANDBOX_* variables, goes to 'sandbox' without it"
    )


def _deploy(args: argparse.Namespace) -> int:
    service: ServiceSpecBlock | None = None
    try:
        validate_version(args.version, "--version")
        if args.environment is not None:
            validate_environment(args.environment, "--environment")
        if (args.spec is None) == (args.service is None):
            raise BadInput(
                "give the service as a spec file (SPEC) or a saved ServiceSpec block "
                "(--service NAME), one of the two",
                field="SPEC",
            )
        if args.service is not None:
            service = _saved_service(args.service)
            service.get_spec()
            text = service.spec
        else:
            load_spec(args.spec)
            text = read_spec_text(Path(args.spec), describe_spec_path(Path(args.spec)))
        environment = deploy_environment(args.environment, text)
    except SpecError as exc:
        _print_problems(exc)
        return EXIT_BAD_INPUT
    except BadInput as exc:
        return _bad_input(exc)
    result = run_deploy(
        str(Path(args.spec).resolve()) if args.spec is not None else None,
        args.version,
        environment,
        args.strategy,
        args.dry_run,
        args.tracking_block,
        service=service,
    )
    code = exit_for(result["status"])
    if args.json:
        endings.emit({**result, "exit_code": code})
    else:
        print_outcome(result)
    exit_at_once_if_prefect_is_gone(result, code)
    return code


def cmd_rollback(args: argparse.Namespace) -> int:
    with _sigterm_as_exception():
        module = sys.modules.get("flows.manual_rollback")
        reached_before = len(getattr(module, "ROLLBACKS_INTERRUPTED", []))
        try:
            return _rollback(args)
        except BaseException as exc:
            if not _interruption(exc):
                raise
            name, code = _interrupted_code(exc)
            print(f"deployflow: rollback interrupted ({name}); see the run's log", file=sys.stderr)
            module = sys.modules.get("flows.manual_rollback")
            reached = list(getattr(module, "ROLLBACKS_INTERRUPTED", []))[reached_before:]
            ending = endings.interrupted(
                name, code, reached[-1] if reached else None, what="the rollback"
            )
            endings.emit_if_wanted(ending)
            return code


def _rollback(args: argparse.Namespace) -> int:
    from deployments.run import print_rollback, rollback_exit, run_rollback

    service: ServiceSpecBlock | None = None
    spec_path: str | None = None
    try:
        validate_environment(args.environment, "--environment")
        if args.to is not None:
            validate_version(args.to, "--to")
        if args.spec is not None:
            spec = load_spec(args.spec)
            if spec.service != args.service:
                raise BadInput(
                    f"SERVICE: {args.service!r} is not the service of {args.spec} "
                    f"({spec.service!r})"
                )
            spec_path = str(Path(args.spec).resolve())
        else:
            service = _saved_service(args.service)
            spec = service.get_spec()
        requested_by = (args.as_name if args.as_name is not None else getpass.getuser()).strip()
        if not requested_by:
            raise BadInput("--as: give the name of the person rolling back")
        if args.tracking_block is None:
            refusal = _rollback_refusal(spec.service, args.environment, args.to)
            if refusal is not None:
                print(f"deployflow: refused, nothing was started: {refusal}", file=sys.stderr)
                endings.emit_if_wanted(
                    endings.bad_input(f"refused, nothing was started: {refusal}", [
                        endings.problem("--to" if args.to else "SERVICE", refusal)
                    ])
                )  # fmt: skip
                return EXIT_BAD_INPUT
    except SpecError as exc:
        _print_problems(exc)
        return EXIT_BAD_INPUT
    except BadInput as exc:
        return _bad_input(exc)
    result = run_rollback(
        args.environment,
        spec_path=spec_path,
        service=service,
        version=args.to,
        reason=args.reason,
        requested_by=requested_by,
        tracking_block=args.tracking_block,
    )
    code = rollback_exit(result)
    if args.json:
        endings.emit({**result, "exit_code": code})
    else:
        print_rollback(result)
    exit_at_once_if_prefect_is_gone(result, code)
    return code


def _rollback_refusal(service: str, environment: str, requested: str | None) -> str | None:
    """Why the tracking database already says no (before any Prefect run starts): the flow
    decides again against the router, which has the last word on what is live."""
    from deployflow.manual_rollback import choose_version, live_version

    engine, sessions = _tracking_session()
    try:
        from deployflow.tracking import repository

        with sessions() as session:
            history = repository.past_deploys(session, service, environment)
    finally:
        engine.dispose()
    live = live_version(history)
    if live is None:
        return None  # nothing recorded: the router may know better (a service adopted by hand)
    choice = choose_version(history, live, requested, service=service, environment=environment)
    return choice.refusal


def cmd_history(args: argparse.Namespace) -> int:
    from deployflow.tracking import db, repository

    if args.limit < 1:
        raise BadInput(f"--limit: give a whole number of deploys, 1 or more (got {args.limit})")
    for flag, value in (("--service", args.service), ("--environment", args.environment)):
        if value is not None and not value.strip():
            raise BadInput(f"{flag}: give a name, or leave the flag out for all")
    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        rows = repository.history(
            session,
            service=args.service,
            environment=args.environment,
            limit=args.limit,
            status=args.status,
        )
        items = [repository.deployment_to_dict(r, include_children=args.json) for r in rows]
    engine.dispose()
    if args.json:
        endings.emit(items)
        return EXIT_OK
    if not items:
        print("no deployments recorded yet" if not _filtered(args) else "no deployment matches")
        return EXIT_OK
    print(
        f"{'ID':>5}  {'STARTED (UTC)':<16}  {'SERVICE':<12} {'VERSION':<12} {'ENVIRONMENT':<11} "
        f"{'STRATEGY':<10} {'STATUS':<11} {'RUN':<8}  REASON"
    )
    for item in items:
        started = str(item["started_at"] or "")[:16].replace("T", " ")
        run = (item["flow_run_id"] or "-")[:8]
        print(
            f"{item['id']:>5}  {started:<16}  {item['service']:<12} {item['version']:<12} "
            f"{item['environment']:<11} {item['strategy']:<10} {item['status']:<11} {run:<8}  "
            f"{short_reason(item)}"
        )
    print("\nthe report of one: deployflow report ID (the tracking id, or the run id)")
    return EXIT_OK


def _filtered(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.service, args.environment, args.status))


def short_reason(item: dict[str, Any], width: int = 72) -> str:
    """The outcome's reason on one line, cut at ``width`` characters."""
    text = " ".join(str(item.get("summary") or "").split())
    if item.get("previous_version") and item.get("strategy") == "rollback":
        text = f"to {item['previous_version']}: {text.split(': ', 1)[-1]}" if text else text
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_status(args: argparse.Namespace) -> int:
    from deployflow.status import service_status, status_lines
    from deployflow.tracking import repository
    from deployments.run import ui_url

    for flag, value in (("SERVICE", args.service), ("--environment", args.environment)):
        if value is not None and not value.strip():
            raise BadInput(f"{flag}: give a name, or leave it out for all")
    if args.spec is not None:
        try:
            spec = load_spec(args.spec)
        except SpecError as exc:
            _print_problems(exc)
            return EXIT_BAD_INPUT
    engine, sessions = _tracking_session()
    try:
        with sessions() as session:
            found = []
            for service, environment in repository.services(session, args.service):
                if args.environment is not None and environment != args.environment:
                    continue
                rows = repository.history(
                    session, service=service, environment=environment, limit=500
                )
                dicts = [repository.deployment_to_dict(r, include_children=False) for r in rows]
                found.append(service_status(service, environment, dicts, ui_url))
    finally:
        engine.dispose()
    if args.spec is not None:
        found = [
            replace(s, split=_router_split(args.spec)) if s.service == spec.service else s
            for s in found
        ]
    if args.json:
        endings.emit([s.to_dict() for s in found])
        return EXIT_OK
    if not found:
        what = f" of {args.service}" if args.service else ""
        print(f"no deploys{what} recorded in the tracking database")
        return EXIT_OK
    print("\n\n".join("\n".join(status_lines(s)) for s in found))
    return EXIT_OK


def _router_split(spec_path: str) -> str:
    """The router's split as it answers now (the spec's router and target), in words."""
    from deployflow.providers import registry
    from deployflow.providers.base import BuildContext
    from deployflow.status import router_split_in_words

    spec = load_spec(spec_path)
    ctx = BuildContext(service=spec.service)
    try:
        target = registry.build("target", spec.target, ctx)
        router = registry.build("router", spec.router, ctx)
        return "router: " + router_split_in_words(router.state(), target.instances())
    except Exception as exc:  # status informs: an unreachable router is a fact to show
        from deployflow.error_words import in_words

        return f"router: cannot be read ({in_words(exc)})"


def _tracking_session() -> Any:
    from deployflow.tracking import db

    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    return engine, db.session_factory(engine)


def cmd_report(args: argparse.Namespace) -> int:
    from deployflow.notify.evidence import report_dir, save_as
    from deployflow.notify.report import CHART_NAME, Report
    from deployflow.tracking import repository

    if not args.run_id.strip():
        raise BadInput("RUN_ID: give the deploy's flow run id (or its tracking id)")
    engine, sessions = _tracking_session()
    try:
        with sessions() as session:
            row = repository.find_deployment(session, args.run_id)
            if row is None:
                print(f"deployflow: no deploy with run id {args.run_id!r} is recorded in the "
                      "tracking database", file=sys.stderr)  # fmt: skip
                return EXIT_FAILED
            stored = sorted(row.reports, key=lambda r: (r.kind != "incident", -r.id))
            label = f"{row.service} {row.version} ({row.status.value})"
            deployment_id, service = row.id, row.service
            report = (
                Report(stored[0].kind, stored[0].markdown, stored[0].chart_png) if stored else None
            )
    finally:
        engine.dispose()
    if report is None:
        print(f"deployflow: deploy {deployment_id} of {label} has no report (reports are written "
              "for rollbacks and released versions, not for dry runs or refused deploys)",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    if args.output:
        for path in save_as(report, Path(args.output)):
            print(f"wrote {path}")
        return EXIT_OK
    if report.chart_png is None:
        print(report.markdown, end="")
        return EXIT_OK
    try:
        chart = report_dir(service, deployment_id) / CHART_NAME
        if not chart.exists():
            chart.parent.mkdir(parents=True, exist_ok=True)
            chart.write_bytes(report.chart_png)
    except OSError as exc:  # a full or read-only data dir: the report itself is in the database
        print(f"deployflow: the chart could not be written under the data dir ({exc.strerror}: "
              f"{exc.filename}); the report follows without it", file=sys.stderr)  # fmt: skip
        print(report.markdown, end="")
        return EXIT_OK
    print(report.linked(str(chart)), end="")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from deployflow.dora import compute, parse_since, table_rows

    try:
        period = parse_since(args.since)
    except ValueError as exc:
        raise BadInput(f"--since: {exc}") from None
    for flag, value in (("--service", args.service), ("--environment", args.environment)):
        if value is not None and not value.strip():
            raise BadInput(f"{flag}: give a name, or leave the flag out for all")
    until = datetime.now(UTC)
    engine, sessions = _tracking_session()
    try:
        with sessions() as session:
            results = compute(
                session, until - period, until, service=args.service, environment=args.environment
            )
    finally:
        engine.dispose()
    if args.json:
        endings.emit([f.to_dict() for f in results])
        return EXIT_OK
    if not results:
        print(f"no deploys finished in the last {args.since}")
        return EXIT_OK
    print(f"DORA figures over the last {args.since} (since {(until - period):%Y-%m-%d %H:%M} UTC)")
    for row in table_rows(results):
        print(f"\n{row.pop('service')} / {row.pop('environment')}")
        for name, value in row.items():
            print(f"  {name + ':':<24}{value}")
    return EXIT_OK


def cmd_checks(args: argparse.Namespace) -> int:
    from deployflow.checks import CheckContext, run_all

    try:
        spec = load_spec(args.spec)
        if args.version:
            validate_version(args.version, "--version")
    except SpecError as exc:
        _print_problems(exc)
        return EXIT_BAD_INPUT
    if spec.pre_checks is None:
        _print_problems(
            SpecError(args.spec, [("pre_checks", "the spec has no pre_checks section")])
        )
        return EXIT_BAD_INPUT
    from deployflow.providers.base import BackendConfigError
    from tasks.prechecks import github_token

    try:
        token = github_token(spec.pre_checks)
    except BackendConfigError as exc:
        _print_problems(SpecError(args.spec, [("pre_checks.review.credentials_block", str(exc))]))
        return EXIT_BAD_INPUT
    ctx = CheckContext(
        version=args.version or "unreleased",
        new_ref=args.ref,
        previous_ref=args.previous_ref,
        github_token=token,
    )
    report = run_all(spec.pre_checks, ctx)
    code = EXIT_OK if report.passed else EXIT_FAILED
    if args.json:
        endings.emit({**report.to_dict(), "exit_code": code})
    else:
        print(report.to_markdown())
    return code


def cmd_check_migrations(args: argparse.Namespace) -> int:
    from deployflow.migrations import command

    parser = _Parser(prog="deployflow check-migrations", description=command.__doc__)
    command.add_arguments(parser)
    code: int = command.run(parser.parse_args(args.rest))
    return code


def cmd_approve(args: argparse.Namespace) -> int:
    try:
        run_id = UUID(args.run_id)
    except ValueError:
        raise BadInput(
            f"RUN_ID: {args.run_id!r} is not a flow run id (a UUID, as the deploy's log shows)"
        ) from None
    name = (args.as_name if args.as_name is not None else getpass.getuser()).strip()
    if not name:
        raise BadInput("--as: give the name of the person confirming")
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        # Without it Prefect would start a temporary server of its own, where no deploy waits.
        raise BadInput("PREFECT_API_URL: set it to the Prefect server the deploy runs on")
    from flows.oncall import ConfirmationRefused, approve

    try:
        answered = approve(run_id, name)
    except ConfirmationRefused as exc:
        print(f"deployflow: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if answered.form == "stage":
        print(f"approved: {name} lets {answered.run_name} go on to its next stage")
    else:
        print(f"confirmed: {name} is on call and watching {answered.run_name}; the deploy goes on")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from deployments.demo import run_demo

    return run_demo(json_output=args.json, state_dir=Path(args.state_dir), router=args.router)


def cmd_sandbox(args: argparse.Namespace) -> int:
    from deployments.demo import run_sandbox

    return run_sandbox(state_dir=Path(args.state_dir), router=args.router, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deployflow", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a service spec and list every problem")
    p.add_argument("spec", help="path of the service spec YAML")
    p.add_argument(
        "--live",
        action="store_true",
        help="also try it against the systems it names: target, router, health URL, every "
        "metrics query for the live version, dependencies, alerts (exit 1 when one fails)",
    )
    p.add_argument(
        "--environment", help="settle the spec's per-environment rules for this environment"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_validate)

    add_init_parser(sub)

    p = sub.add_parser("deploy", help="release a version through the deploy flow")
    p.add_argument("spec", nargs="?", help="path of the service spec YAML (or --service)")
    p.add_argument(
        "--service",
        metavar="NAME",
        help="a ServiceSpec block saved on the Prefect server (PREFECT_API_URL), instead of SPEC",
    )
    p.add_argument("--version", required=True, help="version to release")
    p.add_argument(
        "--environment",
        help="target environment (recorded; required, except for a sandbox spec: 'sandbox')",
    )
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="auto")
    p.add_argument("--dry-run", action="store_true", help="check and plan only")
    p.add_argument(
        "--tracking-block",
        help="name of the deployflow tracking database block (default: DEPLOYFLOW_DATABASE_URL "
        "or the local SQLite file)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "approve",
        help="confirm being on call (step 4), or approve a canary's next stage at a pause step",
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the waiting deploy's flow run id")
    p.add_argument(
        "--as", dest="as_name", metavar="NAME", help="who confirms (default: your login name)"
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser(
        "rollback",
        help="put a service back on its last good version now (no checks, no canary analysis)",
    )
    p.add_argument(
        "service",
        metavar="SERVICE",
        help="the service: a saved ServiceSpec block's name, or the service of --spec",
    )
    p.add_argument("--environment", required=True, help="where to roll back")
    p.add_argument(
        "--to",
        metavar="VERSION",
        help="version to return to (default: the last one that completed a release before the "
        "live one, rolled-back versions skipped)",
    )
    p.add_argument("--reason", default="", help="why, in a sentence (told and reported)")
    p.add_argument("--spec", metavar="FILE", help="the service spec YAML instead of a saved block")
    p.add_argument("--as", dest="as_name", metavar="NAME", help="who (default: your login name)")
    p.add_argument(
        "--tracking-block",
        help="name of the deployflow tracking database block (default: DEPLOYFLOW_DATABASE_URL "
        "or the local SQLite file)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", help="deployments recorded in the tracking database")
    p.add_argument("--service", help="one service (default: all)")
    p.add_argument("--environment", help="one environment (default: all)")
    p.add_argument(
        "--status",
        choices=DEPLOYMENT_STATUSES,
        help="only deploys that ended (or are) so",
    )
    p.add_argument("--limit", type=int, default=20, help="at most this many, newest first")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "status", help="what runs where now: live version, traffic, a deploy in progress"
    )
    p.add_argument("service", metavar="SERVICE", nargs="?", help="one service (default: all)")
    p.add_argument("--environment", help="one environment (default: each)")
    p.add_argument(
        "--spec",
        metavar="FILE",
        help="the service's spec: its router is asked for the split (default: the tracking "
        "database's record of it)",
    )
    p.add_argument("--json", action="store_true", help="print a list of objects")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser(
        "report", help="the incident report or success summary of a deploy (from tracking)"
    )
    p.add_argument("run_id", metavar="RUN_ID", help="the deploy's flow run id (or tracking id)")
    p.add_argument(
        "--output",
        metavar="FILE",
        help="write the markdown to FILE and its chart beside it as <FILE stem>-chart.png",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("stats", help="DORA figures of the deploys in the tracking database")
    p.add_argument("--service", help="one service (default: each, and all together)")
    p.add_argument("--environment", help="one environment (default: each)")
    p.add_argument(
        "--since", default="30d", help="period to look back over: 12h, 30d, 2w (default 30d)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("checks", help="run step 1 (pre-deployment checks) alone")
    p.add_argument("spec", help="path of the service spec YAML")
    p.add_argument("--version", help="version the changelog must name")
    p.add_argument("--ref", default="HEAD", help="commit being released (default HEAD)")
    p.add_argument("--previous-ref", help="commit deployed now, for the changelog check")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_checks)

    # Its own parser is built only when it runs: the migration analysis imports Alembic and a SQL
    # parser (seconds), which no other command should pay for.
    p = sub.add_parser(
        "check-migrations",
        help="run step 2 (migration safety) on an Alembic dir",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_check_migrations)

    p = sub.add_parser("demo", help="sandbox demo: v2 succeeds, v3 rolls back")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--state-dir",
        default=os.environ.get("DEPLOYFLOW_SANDBOX_DIR", ".deployflow/sandbox"),
        help="where the sandbox keeps its state",
    )
    p.add_argument(
        "--router",
        choices=["haproxy", "nginx"],
        default="haproxy",
        help="what splits the traffic (nginx uses examples/sandbox-nginx.yaml)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sandbox", help="keep the sandbox up for deploys by hand (Ctrl-C stops)")
    p.add_argument(
        "--state-dir",
        default=os.environ.get("DEPLOYFLOW_SANDBOX_DIR", ".deployflow/sandbox"),
        help="where the sandbox keeps its state",
    )
    p.add_argument(
        "--router",
        choices=["haproxy", "nginx"],
        default="haproxy",
        help="what splits the traffic (deploy with examples/sandbox-nginx.yaml for nginx)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the versions, the router and Prometheus listen on (default loopback; "
        "this machine's address for workers on other machines)",
    )
    p.set_defaults(func=cmd_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["check-migrations"]:  # all its arguments, -h included, are its own
        return cmd_check_migrations(argparse.Namespace(rest=argv[1:]))
    # With --json, every ending prints one JSON object on stdout: a usage error included.
    ending = endings.begin(endings.wants_json(argv))
    try:
        code = _run(argv)
    except SystemExit as exc:  # argparse: --help, a usage error (its object is printed)
        if exc.code not in (0, None):
            ending.fallback(exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT)
        raise
    except KeyboardInterrupt:
        ending.fallback(EXIT_INTERRUPTED + signal.SIGINT, "interrupted (SIGINT)")
        raise
    except BaseException as exc:
        ending.fallback(EXIT_FAILED, f"{type(exc).__name__}: see the traceback on stderr")
        raise
    ending.fallback(code)
    return code


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BadInput as exc:
        print(f"deployflow: {exc}", file=sys.stderr)
        endings.emit_if_wanted(endings.bad_input(str(exc), exc.problems()))
        return EXIT_BAD_INPUT
    except Exception as exc:
        # Imported only now: the CLI's start does not pay for SQLAlchemy.
        from sqlalchemy.exc import SQLAlchemyError

        from deployflow.tracking.db import TrackingDatabaseError

        if not isinstance(exc, TrackingDatabaseError | SQLAlchemyError):
            raise
        # Unreachable, refusing, or not ours: say so in one line, not a traceback. Neither
        # message holds a password (TrackingDatabaseError masks it; SQLAlchemy's names none).
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"deployflow: the tracking database cannot be used: {first}", file=sys.stderr)
        endings.emit_if_wanted(
            endings.failed(f"the tracking database cannot be used: {first}", EXIT_FAILED)
        )
        return EXIT_FAILED
    return code


if __name__ == "__main__":
    raise SystemExit(main())
