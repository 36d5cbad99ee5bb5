"""``deployflow check-migrations ALEMBIC_DIR [--from REV] [--to REV] [--staging-url URL]
[--python INTERPRETER] [--sys-path FOLDER]... [--revision-timeout SECONDS] [--format text|json]``.

Exit codes: 0 safe, 1 the deploy must stop (error findings, among them any revision that could
not be read, staging failure, unapproved downtime), 2 bad input. Runnable alone:
``python -m deployflow.migrations.command``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from deployflow.migrations.check import check_migrations
from deployflow.migrations.graph import MigrationInputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the check-migrations arguments to ``parser`` (a subparser of the deployflow CLI)."""
    parser.add_argument(
        "alembic_dir",
        metavar="ALEMBIC_DIR",
        type=Path,
        help="the Alembic directory (holding env.py and versions/)",
    )
    parser.add_argument(
        "--from",
        dest="from_rev",
        metavar="REV",
        default=None,
        help="the deployed revision (default: base, i.e. every revision)",
    )
    parser.add_argument(
        "--to",
        dest="to_rev",
        metavar="REV",
        default=None,
        help="the revision to deploy (default: the single head)",
    )
    parser.add_argument(
        "--staging-url",
        metavar="URL",
        default=None,
        help="SQLAlchemy URL of a staging database for the round trip and sizes",
    )
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    parser.add_argument(
        "--python",
        metavar="INTERPRETER",
        default=None,
        help="capture the revisions in a worker of this interpreter (the service's, with Alembic "
        "installed) so application imports resolve (default: deployflow's own, in process)",
    )
    parser.add_argument(
        "--sys-path",
        metavar="FOLDER",
        action="append",
        default=None,
        help="a folder the application is importable from (repeatable; default: alembic.ini's "
        "prepend_sys_path and the checkout root; a package directory is refused)",
    )
    parser.add_argument(
        "--revision-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="time limit per revision (default: 30)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report; return the exit code."""
    fmt = getattr(args, "format", "text")
    if fmt not in ("text", "json"):
        print(f"--format: {fmt!r} is not allowed; use text or json", file=sys.stderr)
        return 2
    timeout = getattr(args, "revision_timeout", None)
    if timeout is not None and not timeout > 0:
        print(f"--revision-timeout: {timeout!r} is not allowed; give seconds > 0", file=sys.stderr)
        return 2
    python = getattr(args, "python", None)
    if python is not None and shutil.which(python) is None:
        print(f"--python: {python!r} is not an executable interpreter", file=sys.stderr)
        return 2
    if python is not None and os.sep in python:
        python = str(Path(python).absolute())  # on the command line: from the current folder
    try:
        report = check_migrations(
            Path(args.alembic_dir), from_rev=args.from_rev, to_rev=args.to_rev,
            staging_url=args.staging_url, python=python, revision_timeout=timeout,
            sys_path=[str(Path(p).absolute()) for p in getattr(args, "sys_path", None) or []],
        )  # fmt: skip
    except MigrationInputError as exc:
        print(f"deployflow check-migrations: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(report.to_json() + "\n" if fmt == "json" else report.to_text())
    return report.exit_code


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m deployflow.migrations.command``."""
    parser = argparse.ArgumentParser(
        prog="deployflow check-migrations",
        description="Check Alembic migrations for deploy safety.",
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed which argument is wrong
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
