"""Start a Prefect flow run warm: the launcher a process work pool runs instead of
``python -m prefect.engine``.

A cold flow run process spends most of its start importing Prefect and the flow (about 2 s of CPU).
This launcher imports nothing but the standard library (run it as ``<python> -I -S
warm_start.py``): it hands the run to a *zygote*, a long-lived process of this checkout that has
Prefect, the engine and the flows already imported and forks one child per run
(``deployments/warm_zygote.py``). The child takes this process's environment, working directory,
umask and standard streams (passed over a Unix socket with SCM_RIGHTS), and runs
``prefect.engine`` as ``__main__``, exactly as the cold command would. This launcher stays the
worker's process for the run: it forwards SIGTERM, SIGINT and SIGHUP to the child (Prefect's
cancellation), and exits with the child's exit code or dies of the child's signal. If the launcher
is killed (SIGKILL), the zygote's monitor of the run kills the child.

A zygote serves only launchers whose conditions match the ones it was started under: the same
checkout, interpreter, preloaded flow files, environment (all but Prefect's per-run ``PREFECT__*``
variables), namespaces, cgroup, user, limits, priority and CPU affinity; they are hashed into its
socket's name. It is started here (detached) when none answers, and exits once a file it imported
changed (checked before each fork: a stale zygote never runs old code), when a thread appears in
it, or after ``DEPLOYFLOW_WARM_IDLE_SECONDS`` (default 600) without a run.

Anything that keeps the warm path from starting the run falls back to the cold command
(``<python> -m prefect.engine``) with one line on standard error. ``DEPLOYFLOW_WARM_START=0``
turns the warm path off; ``DEPLOYFLOW_WARM_DIR`` moves the sockets (default
``$XDG_RUNTIME_DIR/deployflow-warm``, else ``/tmp/deployflow-warm-<uid>``; a directory only this
user may use).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from typing import Any

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Prefect's per-run variables (the flow run id, the control channel's port and token, the
# deployment's name...): read only while a run executes, never at import, so a zygote may serve
# runs that differ in them. Every other variable must match the zygote's own environment.
PER_RUN_PREFIX = "PREFECT__"
OFF = {"0", "false", "no", "off"}
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
HEADER = struct.Struct("!I")


class WarmUnavailable(Exception):
    """The warm path cannot start this run (the reason is the message); start it cold."""


class RunLost(Exception):
    """The zygote may have started the run's process and did not say so: starting it cold too
    could run it twice."""


def say(message: str) -> None:
    try:
        sys.stderr.write(f"deployflow warm start: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


# --- framing: a 4-byte length, then JSON -------------------------------------------------------


def send_message(
    conn: socket.socket, message: dict[str, Any], fds: list[int] | None = None
) -> None:
    body = json.dumps(message).encode()
    header = HEADER.pack(len(body))
    if fds:
        socket.send_fds(conn, [header], fds)
    else:
        conn.sendall(header)
    conn.sendall(body)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        data += chunk
    return data


def recv_message(conn: socket.socket, max_fds: int = 0) -> tuple[dict[str, Any], list[int]]:
    fds: list[int] = []
    if max_fds:
        header, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, max_fds)
        if not header:
            raise ConnectionError("the other side closed the connection")
        if len(header) < HEADER.size:
            header += _recv_exactly(conn, HEADER.size - len(header))
    else:
        header = _recv_exactly(conn, HEADER.size)
    (size,) = HEADER.unpack(header)
    message = json.loads(_recv_exactly(conn, size))
    if not isinstance(message, dict):
        raise ValueError("a message is a JSON object")
    return message, fds


# --- where the zygote for these conditions listens ---------------------------------------------


def stable_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment a zygote is started with and matched on: all but the per-run variables."""
    return {k: v for k, v in environ.items() if not k.startswith(PER_RUN_PREFIX)}


def process_conditions() -> dict[str, Any]:
    """What a forked child inherits from the zygote rather than from this launcher: a zygote
    serves only launchers that have the same."""
    import resource

    namespaces = {}
    try:
        for name in sorted(os.listdir("/proc/self/ns")):
            namespaces[name] = os.readlink(f"/proc/self/ns/{name}")
    except OSError:
        pass
    try:
        with open("/proc/self/cgroup") as f:
            cgroup = f.read()
    except OSError:
        cgroup = ""
    limits = {}
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            with contextlib.suppress(OSError, ValueError):
                limits[name] = resource.getrlimit(getattr(resource, name))
    return {
        "namespaces": namespaces,
        "cgroup": cgroup,
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), sorted(os.getgroups())],
        "limits": limits,
        "priority": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def zygote_key(python: str, preload: list[str], environ: dict[str, str]) -> str:
    conditions = {
        "python": python,
        "checkout": CHECKOUT,
        "preload": preload,
        "env": sorted(stable_environment(environ).items()),
        "process": process_conditions(),
    }
    return hashlib.sha256(json.dumps(conditions, sort_keys=True).encode()).hexdigest()[:24]


def socket_dir(environ: dict[str, str]) -> str:
    """A directory for the sockets that only this user can use (created if missing)."""
    path = environ.get("DEPLOYFLOW_WARM_DIR") or os.path.join(
        environ.get("XDG_RUNTIME_DIR") or "/tmp",
        "deployflow-warm" if environ.get("XDG_RUNTIME_DIR") else f"deployflow-warm-{os.getuid()}",
    )
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WarmUnavailable(f"cannot create {path}: {exc.strerror}") from exc
    info = os.lstat(path)
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise WarmUnavailable(f"{path} is not a directory of this user's alone (mode 0700)")
    return path


# --- the launcher ------------------------------------------------------------------------------


def connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None
    return conn


def start_zygote(base: str, python: str, preload: list[str], environ: dict[str, str]) -> Any:
    """The zygote listening on ``base``.sock, started detached (a session of its own, none of
    this run's streams: it logs to ``base``.log)."""
    import subprocess

    argv = [python, "-m", "deployments.warm_zygote", "--base", base]
    for script in preload:
        argv += ["--preload", script]
    with open(base + ".log", "ab") as log:
        return subprocess.Popen(
            argv,
            cwd=CHECKOUT,
            env=stable_environment(environ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


def wait_for_zygote(base: str, process: Any, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        conn = connect(base + ".sock")
        if conn is not None:
            return conn
        code = process.poll()
        # 0: another zygote for the same conditions holds the lock and is binding; wait for it.
        if code not in (None, 0):
            raise WarmUnavailable(f"the zygote exited {code} while starting (see {base}.log)")
        if time.monotonic() > deadline:
            raise WarmUnavailable(f"no zygote answered within {timeout:.0f} s (see {base}.log)")
        time.sleep(0.05)


class Launcher:
    def __init__(self, preload: list[str], argv: list[str]) -> None:
        self.preload = preload
        self.argv = argv
        self.conn: socket.socket | None = None
        self.pending_signal: int | None = None

    def forward(self, signum: int, _frame: object) -> None:
        if self.conn is None:
            self.pending_signal = signum
            return
        try:
            self.conn.send(bytes([signum]))
        except OSError:
            self.pending_signal = signum

    def hand_over(self) -> int:
        """Start the run in a zygote's child; its pid. Raises WarmUnavailable before any child
        exists."""
        environ = dict(os.environ)
        python = sys.executable
        base = os.path.join(socket_dir(environ), zygote_key(python, self.preload, environ))
        timeout = float(environ.get("DEPLOYFLOW_WARM_START_TIMEOUT", "60"))
        request = {
            "argv": self.argv,
            "cwd": os.getcwd(),
            "env": environ,
            "umask": _umask(),
        }
        for attempt in (1, 2):
            conn = connect(base + ".sock")
            if conn is None:
                process = start_zygote(base, python, self.preload, environ)
                conn = wait_for_zygote(base, process, timeout)
            try:
                conn.settimeout(timeout)
                self.conn = conn  # from here a signal is sent to the child-to-be
                send_message(conn, request, fds=[0, 1, 2])
                # A zygote forks only once it has read the whole request, and a monitor that dies
                # before it answers takes the child with it: a connection closed without an
                # answer means no run's process exists.
                reply, _ = recv_message(conn)
            except TimeoutError as exc:
                conn.close()  # a monitor that reads this end of file kills its child
                raise RunLost(f"the zygote did not answer within {timeout:.0f} s") from exc
            except (OSError, ValueError) as exc:
                self.conn = None
                conn.close()
                if attempt == 1:
                    continue  # the zygote went away meanwhile (idle, stale): start another
                raise WarmUnavailable(f"the zygote did not take the run: {exc}") from exc
            if "pid" in reply:
                conn.settimeout(None)
                return int(reply["pid"])
            self.conn = None
            conn.close()
            if reply.get("error") == "stale" and attempt == 1:
                continue  # it exited because the code changed: a fresh one imports the new code
            raise WarmUnavailable(f"the zygote refused the run: {reply.get('error')}")
        raise WarmUnavailable("no zygote took the run")

    def relay(self) -> None:
        """Wait for the child's end and end the same way."""
        assert self.conn is not None
        if self.pending_signal is not None:
            self.forward(self.pending_signal, None)
        try:
            reply, _ = recv_message(self.conn)
        except (OSError, ValueError):
            say("lost the zygote's monitor of this run; the run's process was stopped")
            os._exit(1)
        code = int(reply.get("exit", 1))
        if code < 0:
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            code = 128 - code
        os._exit(code)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cold(argv: list[str], reason: str | None) -> None:
    if reason:
        say(f"{reason}; starting the run cold (python -m prefect.engine)")
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])


# The job command runs these through /bin/sh before any Python does: the interpreter and the
# launcher were recorded where `prefect deploy` ran, and a worker's machine may have neither
# (another virtual environment, the checkout elsewhere). Then the run starts cold with the
# worker's own interpreter: the first field of its command line (/proc/$PPID/cmdline; Prefect's
# process worker starts the command itself, so it is the sh's parent) when that names a Python,
# else `python3` on the worker's PATH.
_FALLBACK = (
    'w=$(tr "\\000" "\\n" </proc/$PPID/cmdline 2>/dev/null | head -n 1); '
    "case ${w##*/} in python*) ;; *) w=python3 ;; esac; "
    'echo "deployflow warm start: $m (recorded by prefect deploy) is not on this machine;'
    " starting the run cold (python -m prefect.engine)"
    ' with the interpreter of the worker, $w" >&2; '
    'exec "$w" -m prefect.engine'
)
WARM_SCRIPT = (
    'p=$1 l=$2; shift 2; [ -x "$p" ] && [ -f "$l" ] && exec "$p" -I -S "$l" "$@"; '
    '[ -x "$p" ] && m=$l || m=$p; ' + _FALLBACK
)
COLD_SCRIPT = 'p=$1; [ -x "$p" ] && exec "$p" -m prefect.engine; m=$p; ' + _FALLBACK


def warm_start_command(preload: str | list[str] = "flows/deploy.py", **_: object) -> dict[str, str]:
    """A Prefect build step (see prefect.yaml): ``{"command": ...}``, the process work pool's job
    command that starts runs warm. The interpreter is the one running ``prefect deploy`` (it has
    just imported the flows), the launcher this checkout's; ``preload`` names the flow files the
    zygote imports ahead (relative to the checkout). With ``DEPLOYFLOW_WARM_START=0`` where
    ``prefect deploy`` runs, the command is the cold ``<python> -m prefect.engine``. Either runs
    through ``/bin/sh``, which starts the run cold with the worker's own interpreter when the
    recorded interpreter or launcher is missing on the worker's machine (``WARM_SCRIPT``)."""
    import shlex

    if os.environ.get("DEPLOYFLOW_WARM_START", "1").strip().lower() in OFF:
        argv = ["/bin/sh", "-c", COLD_SCRIPT, "deployflow-cold-start", sys.executable]
        return {"command": shlex.join(argv)}
    launcher = os.path.join(CHECKOUT, "deployments", "warm_start.py")
    argv = ["/bin/sh", "-c", WARM_SCRIPT, "deployflow-warm-start", sys.executable, launcher]
    for script in [preload] if isinstance(preload, str) else preload:
        argv += ["--preload", script]
    return {"command": shlex.join(argv)}


def main() -> None:
    args = sys.argv[1:]
    preload: list[str] = []
    rest: list[str] = []
    while args:
        arg = args.pop(0)
        if arg == "--preload" and args:
            preload.append(args.pop(0))
        else:
            rest.append(arg)
    if os.environ.get("DEPLOYFLOW_WARM_START", "1").strip().lower() in OFF:
        cold(rest, None)
    if not sys.platform.startswith("linux"):  # pidfd, PR_SET_PDEATHSIG, /proc: Linux only
        cold(rest, None)
    launcher = Launcher(preload, rest)
    for signum in FORWARDED:
        signal.signal(signum, launcher.forward)
    try:
        launcher.hand_over()
    except RunLost as exc:
        say(f"{exc}; the run is not started again")
        os._exit(1)
    except (WarmUnavailable, OSError, ValueError) as exc:
        if launcher.pending_signal is not None:  # stopped before any child existed
            signal.signal(launcher.pending_signal, signal.SIG_DFL)
            os.kill(os.getpid(), launcher.pending_signal)
        for signum in FORWARDED:
            signal.signal(signum, signal.SIG_DFL)
        cold(rest, str(exc) or type(exc).__name__)
    launcher.relay()


if __name__ == "__main__":
    main()
