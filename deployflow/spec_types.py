"""Building blocks of the service spec: strict models, durations, argv lists.

Every spec model derives from ``StrictModel`` so an unknown key is an error that names its path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class StrictModel(BaseModel):
    """Unknown keys are rejected; values are not coerced across types silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def parse_duration(value: Any) -> float:
    """Turn ``"30s"``, ``"10m"``, ``"1.5h"``, ``"250ms"`` into seconds.

    Bare numbers are refused on purpose: "10" could be seconds or minutes.
    """
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError("a duration is a string like '30s', '10m', '1h' or '250ms'")
    match = _DURATION.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration; use forms like '30s', '10m', '1h', '250ms'")
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
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
