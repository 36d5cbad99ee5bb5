"""Run a configured command: argv list, no shell, a timeout, a controlled environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# What a check command inherits from our environment; everything else must be given explicitly.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    exit_code: int | None  # None when it timed out or could not start
    output_tail: str
    duration_seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def expand_argv(argv: Sequence[str]) -> list[str]:
    """Replace the ``{python}`` placeholder; nothing else is ever substituted."""
    return [arg.replace("{python}", sys.executable) for arg in argv]


def controlled_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.update(extra or {})
    return env


def run_command(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    timeout: float = 600.0,
    env: Mapping[str, str] | None = None,
    tail_lines: int = 30,
) -> CommandResult:
    """Run ``argv`` and keep the tail of its combined output."""
    args = expand_argv(argv)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=controlled_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(
            tuple(args), None, "", time.monotonic() - start, f"command not found: {args[0]}"
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return CommandResult(
            tuple(args),
            None,
            _tail(out, tail_lines),
            time.monotonic() - start,
            f"timed out after {timeout:g}s",
        )
    output = (proc.stdout or "") + (proc.stderr or "")
    return CommandResult(
        tuple(args), proc.returncode, _tail(output, tail_lines), time.monotonic() - start
    )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
