"""``deployflow validate [--live] [--json]``: a spec checked, then (with ``--live``) tried against
the systems it names.

Exit codes: 0 valid (and, with ``--live``, every live check passed or only warned), 2 the spec is
invalid (every problem named; nothing was asked), 1 a live check failed (each one named).
"""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from typing import Any

from deployflow.spec import SpecError, load_spec, validate_environment
from deployments import endings
from deployments.run import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def live_context(service: str, environment: str) -> Any:
    """The build context of a live check from the command line: saved blocks are read from the
    Prefect server ``PREFECT_API_URL`` names, when one is named (without it, a backend whose
    secret lives in a block cannot be built, and says so)."""
    from deployflow.providers.base import BuildContext

    blocks = None
    if os.environ.get("PREFECT_API_URL"):
        from blocks.loader import PrefectBlocks

        blocks = PrefectBlocks()
    return BuildContext(blocks=blocks, service=service, environment=environment)


def cmd_validate(args: Namespace) -> int:
    environment = getattr(args, "environment", None)
    try:
        if environment is not None:
            validate_environment(environment, "--environment")
        spec = load_spec(args.spec)
    except SpecError as exc:
        if args.json:
            endings.emit(
                {
                    **endings.spec_problems(exc.source, exc.problems),
                    "spec": args.spec,
                    "valid": False,
                }
            )
        print(f"invalid: {exc.source}", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if environment is not None:
        spec = spec.for_environment(environment)
    result: dict[str, Any] = {
        "spec": args.spec,
        "valid": True,
        "service": spec.service,
        "strategy": spec.strategy.kind,
    }
    headline = f"ok: {args.spec} (service {spec.service}, strategy {spec.strategy.kind})"
    if not args.live:
        if args.json:
            endings.emit({**result, "exit_code": EXIT_OK})
        else:
            print(headline)
        return EXIT_OK
    from deployflow.live import check_spec_live

    report = check_spec_live(spec, live_context(spec.service, environment or ""))
    result["live"] = report.to_dict()
    code = EXIT_OK if report.passed else EXIT_FAILED
    if args.json:
        endings.emit({**result, "exit_code": code})
    else:
        print(headline)
        for line in report.lines():
            print(f"  {line}")
        print(f"live: {report.headline()}")
    return code
