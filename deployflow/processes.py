"""Local child processes: identity, liveness, group termination, and small helpers around them.

A process started here runs in its own session, so it leads its own process group and can be
stopped with everything it spawned. A recorded pid is only trusted together with the process start
time read from ``/proc``: after a crash the pid may belong to an unrelated process by now, and we
must never signal that one.

General purpose: used by production backends (``deployflow.providers.local_process``) and by the
local sandbox alike, so it must never import ``deployflow.sandbox``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deployflow.polling import DeadlineExceeded, wait_for

# What a process deployflow starts inherits from deployflow's own environment, unless its section
# says more (``inherit_env``): never deployflow's tokens (Slack, GitHub...) or its database URL.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


def allowed_environment(names: tuple[str, ...] = INHERITED_ENV) -> dict[str, str]:
    """The allow-listed part of this process's environment, for a child process."""
    return {name: os.environ[name] for name in names if name in os.environ}


# Popen objects of the children this Python process started, by pid. Several objects (e.g. the
# sandbox's target and the deploy flow's target) may manage the same child; whoever checks it
# reaps it through its Popen so it does not linger as a zombie that looks alive.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started, as written to a state file.

    Attributes:
        pid: Process id; also the process group id (the child runs in its own session).
        start_ticks: Start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), used to
            tell our process from a later one that reuses the pid. None where /proc is missing.
    """

    pid: int
    start_ticks: int | None

    @classmethod
    def of(cls, pid: int) -> ProcessRecord:
        """Record the process ``pid`` as it runs now."""
        fields = _stat_fields(pid)
        return cls(pid=pid, start_ticks=int(fields[19]) if fields else None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProcessRecord:
        """Read what ``to_json`` wrote; raises ValueError on a malformed record."""
        pid = data.get("pid")
        ticks = data.get("start_ticks")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
            raise ValueError(f"'pid' must be an integer greater than 1, got {pid!r}")
        if ticks is not None and not isinstance(ticks, int):
            raise ValueError(f"'start_ticks' must be an integer or null, got {ticks!r}")
        return cls(pid=pid, start_ticks=ticks)


def register_child(proc: subprocess.Popen[bytes]) -> None:
    """Remember ``proc`` so liveness checks reap it once it exits."""
    with _children_lock:
        _children[proc.pid] = proc


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` from field 3 (state) on; None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return raw[raw.rindex(")") + 2 :].split()


def is_running(record: ProcessRecord) -> bool:
    """True when the recorded process still runs (not exited, not a zombie, not a reused pid)."""
    with _children_lock:
        child = _children.get(record.pid)
    if child is not None and child.poll() is not None:
        with _children_lock:
            _children.pop(record.pid, None)
        return False
    fields = _stat_fields(record.pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc on this system: fall back to a signal-0 probe
            os.kill(record.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if fields[0] in ("Z", "X"):
        return False
    return record.start_ticks is None or int(fields[19]) == record.start_ticks


def terminate(record: ProcessRecord, *, timeout: float = 5.0) -> None:
    """Stop the process group of ``record``: SIGTERM, then SIGKILL after ``timeout`` seconds.

    A process that already exited is not an error.
    """
    if not is_running(record):
        return
    _signal_group(record.pid, signal.SIGTERM)
    try:
        wait_for(
            lambda: not is_running(record),
            timeout=timeout,
            what=f"process {record.pid} to exit after SIGTERM",
        )
        return
    except DeadlineExceeded:
        pass
    _signal_group(record.pid, signal.SIGKILL)
    wait_for(
        lambda: not is_running(record),
        timeout=5.0,
        what=f"process {record.pid} to exit after SIGKILL",
    )


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        try:
            group_leader = os.getpgid(pid) == pid
        except ProcessLookupError:
            return
        if group_leader:
            os.killpg(pid, signum)
        else:  # not started by us in its own session: signal only the process itself
            os.kill(pid, signum)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so readers never see a partial file (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def tail(path: Path, *, lines: int = 20, max_chars: int = 4000) -> str:
    """The last ``lines`` lines of a text file (at most ``max_chars``); empty if it is missing."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_chars))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_recorded(record_path: Path, *, timeout: float = 5.0) -> None:
    """Stop the process recorded in ``record_path`` if it still runs, and remove the record.

    This is how a new run cleans up after a crashed one.
    """
    try:
        record = ProcessRecord.from_json(json.loads(record_path.read_text()))
    except FileNotFoundError:
        return
    except (OSError, ValueError, TypeError, AttributeError):
        record_path.unlink(missing_ok=True)  # unreadable: it cannot name a process to stop
        return
    terminate(record, timeout=timeout)
    record_path.unlink(missing_ok=True)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class CommandResult:
    """What one argv run by ``run_command`` did.

    Attributes:
        returncode: Exit status (negative: killed by that signal); None when it timed out.
        stdout: Its standard output (at most ``max_output`` bytes, decoded leniently).
        stderr: Its standard error, likewise.
        timed_out: True when the deadline passed and its process group was killed.
    """

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def stderr_tail(self, lines: int = 20, max_chars: int = 2000) -> str:
        """The last lines of stderr (of stdout when stderr is empty), for an error message."""
        text = self.stderr.strip() or self.stdout.strip()
        tail_text = "\n".join(text.splitlines()[-lines:])
        return tail_text[-max_chars:]


def run_command(
    argv: list[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    max_output: int = 1024 * 1024,
) -> CommandResult:
    """Run ``argv`` (no shell) in its own process group and wait at most ``timeout`` seconds.

    Without ``env`` it gets ``allowed_environment()``, never this process's whole environment.

    Output goes to temporary files, not pipes: a command that leaves a background process behind
    (a start hook launching a server) returns as soon as it exits itself, instead of when the last
    holder of its pipes does. At the deadline the whole process group is killed.

    Raises:
        OSError: ``argv[0]`` cannot be executed (missing, not executable).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env if env is not None else allowed_environment(),
            cwd=cwd,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()

        def read(handle: Any) -> str:
            handle.seek(0)
            return bytes(handle.read(max_output)).decode("utf-8", errors="replace")

        return CommandResult(
            returncode=None if timed_out else proc.returncode,
            stdout=read(out),
            stderr=read(err),
            timed_out=timed_out,
        )
