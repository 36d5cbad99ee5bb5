"""Run a check's command: argv list, no shell, controlled environment, hard timeout."""

from __future__ import annotations

import contextlib
import os
import selectors
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


# After the command itself exited, how long its output may still take to arrive.
DRAIN_SECONDS = 2.0


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str],
) -> CommandOutcome:
    """Run ``argv`` in ``cwd`` and capture its output; never raises for tool failures.

    The command runs in its own process group, and the whole group is killed when the command
    ends or its deadline passes (npm and pytest spawn children that would otherwise outlive the
    check). Waiting is for the command, not for its output pipes: a background process that keeps
    them open (even one that left the group) gets ``DRAIN_SECONDS``, then deployflow stops
    reading, so the check ends at its deadline at the latest.
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
    with process:
        stdout, stderr, timed_out = _collect(process, deadline=started + timeout)
    return CommandOutcome(
        argv=tuple(argv),
        returncode=process.returncode,
        stdout=stdout.decode("utf-8", errors="replace"),
        stderr=stderr.decode("utf-8", errors="replace"),
        duration_seconds=time.monotonic() - started,
        timed_out=timed_out,
    )


def _collect(process: subprocess.Popen[bytes], *, deadline: float) -> tuple[bytes, bytes, bool]:
    """Read both pipes until the command ended and its output stopped, or the deadline.

    The whole group is killed once the command exits or its deadline passes; output still held
    open by something outside the group gets ``DRAIN_SECONDS`` more and is then left unread.
    """
    pipes = {pipe.fileno(): pipe for pipe in (process.stdout, process.stderr) if pipe is not None}
    chunks: dict[int, list[bytes]] = {fd: [] for fd in pipes}
    selector = selectors.DefaultSelector()
    for pipe in pipes.values():
        selector.register(pipe, selectors.EVENT_READ)
    timed_out = False
    stop_reading_at: float | None = None
    while selector.get_map():
        now = time.monotonic()
        if stop_reading_at is None and (process.poll() is not None or now >= deadline):
            timed_out = process.poll() is None
            _kill_group(process)
            process.wait()
            stop_reading_at = now + DRAIN_SECONDS
        limit = deadline if stop_reading_at is None else stop_reading_at
        if now >= limit:
            break
        for key, _ in selector.select(timeout=min(limit - now, 0.2)):
            data = os.read(key.fd, 65536)
            if data:
                chunks[key.fd].append(data)
            else:
                selector.unregister(key.fileobj)
    selector.close()
    if stop_reading_at is None:
        # The command closed both pipes but may still run: it gets what is left of its time.
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(process)
        process.wait()
    out, err = (process.stdout, process.stderr)
    return (
        b"".join(chunks[out.fileno()]) if out else b"",
        b"".join(chunks[err.fileno()]) if err else b"",
        timed_out,
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The group may be gone already between the timeout and the kill.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
