"""The ``deployflow`` command line.

Exit codes: 0 succeeded, 3 rolled back, 1 failed or aborted, 2 bad input (nothing was started).

The CLI lives with the deployments because it is one more way the flows are offered to people:
``deploy`` runs the same Prefect flow the UI, schedules and API trigger.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from deployflow.spec import SpecError, load_spec, validate_environment, validate_version
from deployflow.strategy import STRATEGY_CHOICES
from deployments.run import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    exit_for,
    print_outcome,
    run_deploy,
)

if TYPE_CHECKING:
    from blocks.service_spec import ServiceSpecBlock

# Prefect's block document names: lowercase letters, digits and dashes.
BLOCK_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


class BadInput(Exception):
    """A command-line value that is not allowed; the message names it."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 too; keep one message format
        self.print_usage(sys.stderr)
        print(f"deployflow: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def _print_problems(error: SpecError) -> None:
    print(f"invalid: {error.source}", file=sys.stderr)
    for path, message in error.problems:
        print(f"  {path}: {message}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        _print_problems(exc)
        return EXIT_BAD_INPUT
    print(f"ok: {args.spec} (service {spec.service}, strategy {spec.strategy.kind})")
    return EXIT_OK


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
    service: ServiceSpecBlock | None = None
    try:
        validate_version(args.version, "--version")
        validate_environment(args.environment, "--environment")
        if (args.spec is None) == (args.service is None):
            raise BadInput(
                "give the service as a spec file (SPEC) or a saved ServiceSpec block "
                "(--service NAME), one of the two"
            )
        if args.service is not None:
            service = _saved_service(args.service)
            service.get_spec()
        else:
            load_spec(args.spec)
    except SpecError as exc:
        _print_problems(exc)
        return EXIT_BAD_INPUT
    except BadInput as exc:
        print(f"deployflow: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from prefect.exceptions import TerminationSignal

    try:
        result = run_deploy(
            str(Path(args.spec).resolve()) if args.spec is not None else None,
            args.version,
            args.environment,
            args.strategy,
            args.dry_run,
            args.tracking_block,
            service=service,
        )
    except (KeyboardInterrupt, TerminationSignal) as exc:
        # The flow already put traffic back on the stable version (or recorded why it could
        # not, for the next deploy to reconcile); see the run's log.
        name = "SIGTERM" if isinstance(exc, TerminationSignal) else "SIGINT"
        print(f"deployflow: deploy of {args.version} interrupted ({name})", file=sys.stderr)
        return EXIT_INTERRUPTED + (15 if name == "SIGTERM" else 2)
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print_outcome(result)
    return exit_for(result["status"])


def cmd_history(args: argparse.Namespace) -> int:
    from deployflow.tracking import db, repository

    engine = db.make_engine(db.database_url())
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        rows = repository.history(
            session, service=args.service, environment=args.environment, limit=args.limit
        )
        items = [repository.deployment_to_dict(r, include_children=args.json) for r in rows]
    engine.dispose()
    if args.json:
        print(json.dumps(items, default=str))
        return EXIT_OK
    for item in items:
        print(
            f"{item['started_at']}  {item['service']:<12} {item['version']:<12} "
            f"{item['environment']:<10} {item['strategy']:<8} {item['status']}"
        )
    if not items:
        print("no deployments recorded yet")
    return EXIT_OK


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
    chart = report_dir(service, deployment_id) / CHART_NAME
    if report.chart_png is not None and not chart.exists():
        chart.parent.mkdir(parents=True, exist_ok=True)
        chart.write_bytes(report.chart_png)
    print(report.linked(str(chart)) if report.chart_png is not None else report.markdown, end="")
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
        print(json.dumps([f.to_dict() for f in results]))
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
        print(
            f"invalid: {args.spec}\n  pre_checks: the spec has no pre_checks section",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    from deployflow.providers.base import BackendConfigError
    from tasks.prechecks import github_token

    try:
        token = github_token(spec.pre_checks)
    except BackendConfigError as exc:
        print(
            f"invalid: {args.spec}\n  pre_checks.review.credentials_block: {exc}", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    ctx = CheckContext(
        version=args.version or "unreleased",
        new_ref=args.ref,
        previous_ref=args.previous_ref,
        github_token=token,
    )
    report = run_all(spec.pre_checks, ctx)
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        print(report.to_markdown())
    return EXIT_OK if report.passed else EXIT_FAILED


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
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("deploy", help="release a version through the deploy flow")
    p.add_argument("spec", nargs="?", help="path of the service spec YAML (or --service)")
    p.add_argument(
        "--service",
        metavar="NAME",
        help="a ServiceSpec block saved on the Prefect server (PREFECT_API_URL), instead of SPEC",
    )
    p.add_argument("--version", required=True, help="version to release")
    p.add_argument("--environment", default="sandbox", help="target environment (recorded)")
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

    p = sub.add_parser("history", help="deployments recorded in the tracking database")
    p.add_argument("--service")
    p.add_argument("--environment")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

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
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BadInput as exc:
        print(f"deployflow: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return code


if __name__ == "__main__":
    raise SystemExit(main())
