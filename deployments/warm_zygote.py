"""The zygote of the warm start (see ``deployments/warm_start.py``, which starts it).

``python -m deployments.warm_zygote --base DIR/KEY [--preload FILE]...`` from the checkout: imports
Prefect, what ``python -m prefect.engine`` imports, and each preloaded flow file the way the engine
loads an entrypoint (keeping what it imports, not the file's own module: each run executes the file
anew); then listens on ``DIR/KEY.sock``. For each launcher that connects it checks
that no file it imported changed and that it still has a single thread, then forks a monitor of
the run, which forks the run's process: that child takes the launcher's environment (the whole of
``os.environ`` replaced), working directory, umask and standard streams, refreshes Prefect's
settings from that environment and runs ``prefect.engine`` as ``__main__``. The monitor forwards the
launcher's signals to the child, kills the child if the launcher goes away, and sends the child's
exit status back.

It exits (refusing the run it was asked, which the launcher then gives to a fresh zygote or starts
cold) when an imported file changed, when a thread appeared, when its socket was removed, or after
``DEPLOYFLOW_WARM_IDLE_SECONDS`` (default 600) without a run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import importlib
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from deployments.warm_start import CHECKOUT, recv_message, send_message

# What `python -m prefect.engine` imports before and while it starts a flow run.
ENGINE_MODULES = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect._internal.metrics",
    "prefect._internal.control_listener",
    "prefect.flows",
    "prefect.deployments.steps",
    "prefect.deployments.steps.pull",
    "prefect.client.orchestration",
    "prefect.logging.handlers",
    "prefect.runtime",
)
# A file changed less than this before the zygote started importing may have been read half-way
# through an edit, or after the stamp was taken: such a zygote refuses to serve.
MTIME_MARGIN_NS = 2_000_000_000
PR_SET_PDEATHSIG = 1
LOCK_WAIT_SECONDS = 30

Stamp = tuple[int, int, int]


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} zygote {os.getpid()}: {message}", flush=True)


def stamp(path: str) -> Stamp | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


def answers(path: str) -> bool:
    """True when a zygote accepts connections on ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def imported_files() -> dict[str, Stamp | None]:
    """Every imported module's file and the directories holding them (a file added beside a
    module could shadow it), with their stamps."""
    files: dict[str, Stamp | None] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files[path] = stamp(path)
            directory = os.path.dirname(path)
            if directory not in files:
                files[directory] = stamp(directory)
    return files


def changed(files: dict[str, Stamp | None]) -> str | None:
    """The first file whose stamp is not the one recorded, else None."""
    for path, recorded in files.items():
        if stamp(path) != recorded:
            return path
    return None


class Zygote:
    def __init__(self, base: str, preload: list[str]) -> None:
        self.base = base
        self.preload = preload
        self.idle = float(os.environ.get("DEPLOYFLOW_WARM_IDLE_SECONDS", "600"))
        self.listener: socket.socket | None = None
        self.lock: Any = None
        self.files: dict[str, Stamp | None] = {}
        self.socket_stamp: Stamp | None = None

    def start(self) -> bool:
        """Preload and listen; False when another zygote serves these conditions already."""
        self.lock = open(self.base + ".lock", "a")  # noqa: SIM115 (held for the process's life)
        # The holder is either a zygote serving these conditions (then our launcher connects to
        # it and we are not needed) or one exiting (stale code, idle): wait for it to go.
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline or answers(self.base + ".sock"):
                    log("another zygote serves these conditions; exiting")
                    return False
                time.sleep(0.05)
        started = time.time_ns()
        for name in ENGINE_MODULES:
            importlib.import_module(name)
        from prefect.utilities.importtools import load_script_as_module

        for script in self.preload:
            module = load_script_as_module(str(Path(CHECKOUT) / script))
            # What the flow file imports stays imported; the file itself is executed again by
            # each run, under the name a cold run gives it, from what is on disk then.
            sys.modules.pop(module.__name__, None)
        self.files = imported_files()
        # Files only: importing writes __pycache__ folders, which changes their parents' times.
        fresh = [
            path
            for path, mark in self.files.items()
            if mark is None or (not os.path.isdir(path) and mark[0] >= started - MTIME_MARGIN_NS)
        ]
        if fresh:
            log(f"{fresh[0]} changed while (or just before) it was imported; exiting")
            return False
        if threading.active_count() > 1:
            log(f"importing started threads {threading.enumerate()}; cannot fork safely, exiting")
            return False
        path = self.base + ".sock"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a dead zygote's: the lock says none is alive
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        listener.listen(16)
        self.listener = listener
        self.socket_stamp = stamp(path)
        log(f"ready: {len(self.files)} files imported, preloaded {self.preload}")
        return True

    def serve(self) -> None:
        assert self.listener is not None
        last = time.monotonic()
        while True:
            self.reap()
            readable, _, _ = select.select([self.listener], [], [], 1.0)
            if stamp(self.base + ".sock") != self.socket_stamp:
                log("my socket was removed or replaced; exiting")
                return
            if not readable:
                if time.monotonic() - last > self.idle:
                    log(f"idle for {self.idle:.0f} s; exiting")
                    return
                continue
            conn, _ = self.listener.accept()
            last = time.monotonic()
            if not self.take(conn):
                return

    def take(self, conn: socket.socket) -> bool:
        """Fork the run a launcher asks for; False when this zygote must exit instead."""
        fds: list[int] = []
        try:
            conn.settimeout(10)
            request, fds = recv_message(conn, max_fds=3)
            if len(fds) != 3:
                raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
            stale = changed(self.files)
            if stale is not None:
                log(f"{stale} changed since it was imported; refusing the run and exiting")
                self.close()  # first, so that the launcher's next try starts a fresh zygote
                send_message(conn, {"error": "stale"})
                return False
            if threading.active_count() > 1:
                log(f"threads appeared: {threading.enumerate()}; refusing the run and exiting")
                self.close()
                send_message(conn, {"error": "threads in the zygote"})
                return False
            if launcher_gave_up(conn):
                # It stopped waiting for the answer (DEPLOYFLOW_WARM_START_TIMEOUT) and exited
                # without starting the run: neither may we.
                log("the launcher stopped waiting before its request was read; not starting it")
                return True
            conn.settimeout(None)
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                self.monitor(conn, request, fds)
            return True
        except (OSError, ValueError) as exc:
            log(f"a launcher's request failed: {exc!r}")
            return True
        finally:
            for fd in fds:
                os.close(fd)  # the run's streams: only its process may hold them
            conn.close()

    def reap(self) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    def close(self) -> None:
        if self.listener is not None and stamp(self.base + ".sock") == self.socket_stamp:
            for suffix in (".sock", ".pid"):
                with contextlib.suppress(OSError):
                    os.unlink(self.base + suffix)
            self.listener.close()

    # --- in the monitor of one run ------------------------------------------------------------

    def monitor(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> NoReturn:
        try:
            assert self.listener is not None
            self.listener.close()
            self.lock.close()
            monitor_pid = os.getpid()
            child = os.fork()
            if child == 0:
                run_child(conn, request, fds, monitor_pid)
            for fd in fds:
                os.close(fd)
            log(f"started a run's process, {child}")
            send_message(conn, {"pid": child})
            code = watch(conn, child)
            with contextlib.suppress(OSError):
                send_message(conn, {"exit": code})
        except BaseException:  # a monitor never returns into the zygote's loop
            traceback.print_exc()
        os._exit(0)


def watch(conn: socket.socket, child: int) -> int:
    """Forward the launcher's signals to ``child`` until it ends; kill it if the launcher goes
    away. The child's exit code, or minus the signal that ended it."""
    pidfd = os.pidfd_open(child)
    launcher_gone = False
    while True:
        waiting = [pidfd] if launcher_gone else [pidfd, conn.fileno()]
        readable, _, _ = select.select(waiting, [], [])
        if conn.fileno() in readable:
            try:
                data = conn.recv(64)
            except OSError:
                data = b""
            if not data:
                launcher_gone = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            for signum in data:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signum)
        if pidfd in readable:
            _, status = os.waitpid(child, 0)
            os.close(pidfd)
            return os.waitstatus_to_exitcode(status)


def launcher_gave_up(conn: socket.socket) -> bool:
    """True when the launcher closed its end after sending its request (end of file waiting).
    Never waits: a socket with a timeout would otherwise wait for data before peeking."""
    timeout = conn.gettimeout()
    conn.setblocking(False)
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (BlockingIOError, InterruptedError):
        return False  # still connected, nothing sent: waiting for the answer
    except OSError:
        return True  # reset: gone
    finally:
        conn.settimeout(timeout)


def run_child(
    conn: socket.socket, request: dict[str, Any], fds: list[int], parent: int
) -> NoReturn:
    """Become the run's process: the launcher's streams, directory, umask and environment, then
    ``prefect.engine`` as ``__main__``, then the interpreter's own exit steps."""
    code: int = 1
    interrupted = False
    try:
        conn.close()
        # Die with the monitor (which is killed only if something kills it).
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.umask(int(request["umask"]))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-m", *request["argv"]]
        import runpy

        import prefect.context

        prefect.context.refresh_global_settings_context()
        # As `python -m prefect.engine`: the module runs as __main__, and is not (yet) imported
        # under its own name (runpy warns otherwise).
        sys.modules.pop("prefect.engine", None)
        try:
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exit_code(exc.code)
        except KeyboardInterrupt:
            traceback.print_exc()
            interrupted = True
        except BaseException:  # as the interpreter would: print, exit 1
            traceback.print_exc()
            code = 1
        # What the interpreter does at exit: wait for threads, run atexit functions, flush.
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    if interrupted:  # as Python does after an unhandled KeyboardInterrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    with contextlib.suppress(BaseException):
        print(value, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="DIR/KEY: the socket is DIR/KEY.sock")
    parser.add_argument("--preload", action="append", default=[], metavar="FILE")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    zygote = Zygote(args.base, args.preload)
    try:
        if not zygote.start():
            return 0 if zygote.listener is None and not zygote.files else 1
        with open(args.base + ".pid", "w") as pidfile:
            pidfile.write(str(os.getpid()))
        zygote.serve()
    finally:
        zygote.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
