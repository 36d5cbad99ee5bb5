"""Building blocks of the service spec: strict models, durations, argv lists, URLs, versions.

Every spec model derives from ``StrictModel`` so an unknown key is an error that names its path.
Backend modules build their own spec sections from these without importing ``deployflow.spec``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$"
_VERSION_RE = re.compile(VERSION_PATTERN)
ENVIRONMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# ASCII digits only (\d would take full-width and other Unicode digits), at most 9 before the point.
_DURATION = re.compile(r"\s*([0-9]{1,9}(?:\.[0-9]{1,9})?)\s*(ms|s|m|h)\s*")
MAX_DURATION_SECONDS = 7 * 24 * 3600.0
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


MAX_PROBLEMS_SHOWN = 20
MAX_PROBLEM_CHARS = 300


class SpecError(ValueError):
    """The spec (or a parameter checked against it) is invalid. ``problems`` lists every one.

    The message shows at most ``MAX_PROBLEMS_SHOWN`` problems of at most ``MAX_PROBLEM_CHARS``
    characters each, so a pathological spec cannot produce a pathological message.
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = [
            (_clip(path), _clip(message)) for path, message in problems[:MAX_PROBLEMS_SHOWN]
        ]
        lines = "\n".join(f"  {path}: {message}" for path, message in self.problems)
        more = len(problems) - len(self.problems)
        if more > 0:
            lines += f"\n  ... and {more} more"
            self.problems.append(("...", f"and {more} more"))
        super().__init__(f"{_clip(source)}: {len(problems)} problem(s)\n{lines}")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 3] + "..."


def validate_environment(environment: str, field: str = "environment") -> str:
    """Environments name database rows and artifacts: keep them plain."""
    # fullmatch: with match, '$' also accepts a trailing newline that the flow's schema refuses.
    if not re.fullmatch(ENVIRONMENT_PATTERN, environment):
        raise SpecError(
            field,
            [(field, f"{environment!r} is not allowed: use 1-64 letters, digits, '.', '_', '-'")],
        )
    return environment


def validate_version(version: str, field: str = "version") -> str:
    """A version goes into argv lists, PromQL label matchers and file names: keep it plain."""
    if not _VERSION_RE.fullmatch(version):
        raise SpecError(
            field,
            [
                (
                    field,
                    f"{version!r} is not allowed: use 1-128 letters, digits, '.', '_', '+', '-', "
                    "starting with a letter or digit",
                )
            ],
        )
    return version


def program_problem(program: str) -> str | None:
    """Why ``program`` (an argv[0]) cannot be run, or None when it can.

    A name without '/' is looked up on PATH; a path must be an executable regular file. A
    program that is still a template (``{...}``) is checked when it runs.
    """
    if "{" in program:
        return None
    if "/" not in program:
        if shutil.which(program) is None:
            return f"program {program!r} is not found on PATH"
        return None
    path = Path(program)
    if not path.is_file():
        return f"{program} does not exist (or is not a file)"
    if not os.access(path, os.X_OK):
        return f"{program} is not executable (chmod +x it)"
    return None


class StrictModel(BaseModel):
    """Unknown keys are rejected; values are not coerced across types silently.

    ``spec_relative_paths`` names the fields holding paths that are relative to the spec file's
    folder; ``deployflow.spec.load_spec`` makes them absolute.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    spec_relative_paths: ClassVar[tuple[str, ...]] = ()
    # Fields holding an argv list whose program (argv[0]) is run by deployflow itself: a relative
    # path containing '/' is relative to the spec's folder, and ``load_spec`` checks that the
    # program exists and is executable before anything starts.
    spec_programs: ClassVar[tuple[str, ...]] = ()


def parse_duration(value: Any) -> float:
    """Turn ``"30s"``, ``"10m"``, ``"1.5h"``, ``"250ms"`` into seconds.

    Bare numbers are refused on purpose: "10" could be seconds or minutes.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("a duration is a string like '30s', '10m', '1h' or '250ms'")
    match = _DURATION.fullmatch(value)
    if not match:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(f"{shown!r} is not a duration; use forms like '30s', '10m', '1h', '250ms'")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError("a duration may be at most 7 days ('168h')")
    return seconds


def format_duration(seconds: float) -> str:
    """Inverse of ``parse_duration`` for display ("1.5s", "10m")."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


# Seconds as a float, written in the spec as "30s" / "10m".
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _argv(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "commands are argv lists like ['pytest', '-q'], never shell strings "
            "(no shell runs them, so quoting and pipes would not mean what they seem)"
        )
    return value


# A command line as a list of arguments, run without a shell.
Argv = Annotated[
    list[Annotated[str, Field(min_length=1)]], BeforeValidator(_argv), Field(min_length=1)
]


def _http_url(value: Any) -> Any:
    if isinstance(value, str):
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")
    return value


# An http(s) URL without a trailing slash.
HttpUrl = Annotated[str, AfterValidator(_http_url)]
