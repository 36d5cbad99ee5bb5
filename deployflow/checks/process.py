"""Run a check's command: argv list, no shell, controlled environment, hard timeout."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# What a command inherits from the runner. Tools need PATH/HOME/locale to work at all; the CA and
# proxy settings let audits reach their advisory sources the way the machine is set up to. Nothing
# else leaks in (tokens, cloud credentials, the runner's own coverage or Prefect settings).
INHERITED_ENV: tuple[str, ...] = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "PIP_CERT",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)

TAIL_LINES = 30
TAIL_CHARS = 4000


@dataclass(frozen=True)
class CommandOutcome:
    """What a finished (or killed) command left behind."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    duration_seconds: float
    timed_out: bool = False
    launch_error: str | None = None

    @property
    def succeeded(self) -> bool:
        """True when the command ran to completion with exit code 0."""
        return self.returncode == 0 and not self.timed_out and self.launch_error is None

    def tail(self) -> str:
        """The last lines of stderr then stdout, bounded for reports."""
        return output_tail("\n".join(part for part in (self.stdout, self.stderr) if part.strip()))


def output_tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """Last ``lines`` lines of ``text``, at most ``chars`` characters."""
    tail = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return tail[-chars:]


def controlled_env(
    extra: Mapping[str, str], source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment a check command sees: the allowlist from ``source`` plus ``extra``."""
    base = os.environ if source is None else source
    env = {name: base[name] for name in INHERITED_ENV if name in base}
    env.update(extra)
    return env


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str],
) -> CommandOutcome:
    """Run ``argv`` in ``cwd`` and capture its output; never raises for tool failures.

    The command runs in its own process group so a timeout kills the whole tree (npm and pytest
    spawn children that would otherwise outlive the check).
    """
    started = time.monotonic()
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except OSError as exc:
        return CommandOutcome(
            argv=tuple(argv),
            returncode=None,
            stdout="",
            stderr="",
            duration_seconds=time.monotonic() - started,
            launch_error=f"could not start {argv[0]!r}: {exc.strerror or exc}",
        )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(process)
        stdout, stderr = process.communicate()
        timed_out = True
    return CommandOutcome(
        argv=tuple(argv),
        returncode=process.returncode,
        stdout=stdout,
        stderr=stderr,
        duration_seconds=time.monotonic() - started,
        timed_out=timed_out,
    )


def _kill_group(process: subprocess.Popen[str]) -> None:
    # The group may be gone already between the timeout and the kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
