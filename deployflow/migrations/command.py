"""``deployflow check-migrations ALEMBIC_DIR [--from REV] [--to REV] [--staging-url URL]``.

Exit codes: 0 safe, 1 the deploy must stop (error findings, staging failure, unapproved
downtime), 2 bad input. Runnable alone: ``python -m deployflow.migrations.command``.
"""

from __future__ import annotations

import argparse
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


def run(args: argparse.Namespace) -> int:
    """Run the check and print the report; return the exit code."""
    fmt = getattr(args, "format", "text")
    if fmt not in ("text", "json"):
        print(f"--format: {fmt!r} is not allowed; use text or json", file=sys.stderr)
        return 2
    try:
        report = check_migrations(
            Path(args.alembic_dir), from_rev=args.from_rev, to_rev=args.to_rev,
            staging_url=args.staging_url,
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
