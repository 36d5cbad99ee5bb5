"""The one JSON object a ``--json`` command prints on stdout when it does not end its usual way:
bad input (exit 2), an interruption (Ctrl-C, SIGTERM), a failure the command could not turn into
its own result. Scripts read stdout; they must always find exactly one object there, with the
exit code the process ends with.

Pure functions of what the command knows; ``JsonEnding`` only remembers whether the object was
printed, so that a command never prints two.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

# "argument --strategy: invalid choice: 'x' (choose from ...)", "argument SPEC: ..."
_ARGPARSE_ARGUMENT = re.compile(r"^argument (?P<field>[^:]+): (?P<message>.*)$", re.DOTALL)
# "the following arguments are required: --version, --environment"
_ARGPARSE_REQUIRED = re.compile(r"^the following arguments are required: (?P<fields>.*)$")
# "unrecognized arguments: --colour red"
_ARGPARSE_UNKNOWN = re.compile(r"^unrecognized arguments: (?P<fields>.*)$")
# A message that names its field first: "--limit: ...", "RUN_ID: ...", "pre_checks.build: ...".
_FIELD_FIRST = re.compile(
    r"^(?P<field>--?[A-Za-z][\w-]*|[A-Z][A-Z_]+|[a-z_][\w.\[\]-]*): (?P<m>.+)$"
)


def problem(field: str | None, message: str) -> dict[str, str | None]:
    """One bad value: the field (a flag, an argument, a spec path; None when the whole command
    line is at fault) and what is wrong with it, which says what is allowed."""
    return {"field": field, "message": message}


def split_field(message: str) -> dict[str, str | None]:
    """A message of the form ``FIELD: what is allowed`` as a problem; a message that names no
    field first is kept whole with field None."""
    found = _FIELD_FIRST.match(message.strip())
    if found is None:
        return problem(None, message.strip())
    return problem(found["field"], found["m"])


def argparse_problems(message: str) -> list[dict[str, str | None]]:
    """argparse's one-line error as problems naming each field it is about."""
    text = message.strip()
    if (found := _ARGPARSE_ARGUMENT.match(text)) is not None:
        fields = found["field"].split("/")  # "argument -h/--help"
        return [problem(fields[-1], found["message"])]
    if (found := _ARGPARSE_REQUIRED.match(text)) is not None:
        return [problem(f.strip(), "required") for f in found["fields"].split(",")]
    if (found := _ARGPARSE_UNKNOWN.match(text)) is not None:
        return [problem(found["fields"].split()[0], f"not an option of this command: {text}")]
    return [problem(None, text)]


def bad_input(
    error: str, problems: Sequence[dict[str, str | None]] = (), *, exit_code: int = 2
) -> dict[str, Any]:
    """Bad input: nothing was started, no traffic moved. ``error`` in one sentence, each bad
    field with what is allowed in ``problems``."""
    return {
        "status": "bad_input",
        "error": error,
        "problems": list(problems) or [split_field(error)],
        "started": False,
        "exit_code": exit_code,
    }


def spec_problems(source: str, problems: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A spec (or a parameter checked like one) that is invalid: every problem with its path."""
    listed = [problem(path, message) for path, message in problems]
    shown = "; ".join(f"{p['field']}: {p['message']}" for p in listed[:3])
    if [p["field"] for p in listed] == [source]:  # a parameter: "--version: ..." once
        return bad_input(shown, listed)
    return bad_input(f"invalid: {source}: {shown}" if shown else f"invalid: {source}", listed)


def failed(error: str, exit_code: int) -> dict[str, Any]:
    """The command could not produce its own result (the tracking database cannot be used, a
    bug): why, in a sentence."""
    return {"status": "failed", "error": error, "exit_code": exit_code}


def interrupted(
    signal_name: str,
    exit_code: int,
    reached: dict[str, Any] | None,
    *,
    what: str,
    version: str | None = None,
) -> dict[str, Any]:
    """A run stopped by ``signal_name``: what it reached by then (``reached``: the outcome dict
    the flow recorded when it handled the signal, with its ``interruption``), or, when it
    reached nothing, that it stopped before anything of it was recorded.

    ``traffic_restored`` is True when traffic is known to be on the version that served before
    (or never left it), False when putting it back failed, None when unknown; ``serving`` names
    the version known to serve all the traffic, else None.
    """
    if reached is None:
        return {
            "status": "interrupted",
            "signal": signal_name,
            "version": version,
            "traffic_restored": None,
            "serving": None,
            "deployment_id": None,
            "flow_run_id": None,
            "message": (
                f"{what} interrupted ({signal_name}) before it reached an outcome this process "
                "knows of: `deployflow status` shows what serves, `deployflow history` what was "
                "recorded"
            ),
            "exit_code": exit_code,
        }
    interruption = reached.get("interruption") or {}
    return {
        **reached,
        "status": "interrupted",
        "recorded_status": reached.get("status"),
        "signal": signal_name,
        "traffic_restored": interruption.get("traffic_restored"),
        "serving": interruption.get("serving"),
        "exit_code": exit_code,
    }


class JsonEnding:
    """The running command's one JSON object on stdout: ``emit`` prints it (the command asked
    for JSON), ``emit_if_wanted`` only when the command line has ``--json`` (endings the command
    did not reach its own output in); either prints at most one object."""

    def __init__(self, wanted: bool = False) -> None:
        self.wanted = wanted
        self.printed = False

    def emit(self, value: object) -> None:
        """Print ``value`` as JSON unless an object was already printed."""
        if self.printed:
            return
        self.printed = True
        print(json.dumps(value, default=str), flush=True)

    def emit_if_wanted(self, value: object) -> None:
        if self.wanted:
            self.emit(value)

    def fallback(self, exit_code: int, error: str = "see the message on stderr") -> None:
        """The command ended without printing its object: say so with the exit code, so stdout
        still holds one object (the reason is on stderr)."""
        if exit_code == 2:
            self.emit_if_wanted(bad_input(error, [problem(None, error)]))
        else:
            self.emit_if_wanted(failed(error, exit_code))


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON (before it is parsed: a parse error must print
    its object too)."""
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


# The running command's (one command per process; ``deployments.cli.main`` resets it).
current = JsonEnding()


def begin(wanted: bool) -> JsonEnding:
    """A new command starts: its JSON object is not printed yet."""
    global current
    current = JsonEnding(wanted)
    return current


def emit(value: object) -> None:
    """Print the running command's JSON object (the command was asked for JSON), once."""
    current.emit(value)


def emit_if_wanted(value: object) -> None:
    """Print this ending's JSON object when the command line has ``--json`` (and none was
    printed)."""
    current.emit_if_wanted(value)
