"""The warm start's pure parts (deployments/warm_start.py, warm_zygote.py): which zygote serves
which launcher, the message framing with file descriptors, exit codes, and the staleness check.
The whole path through a real worker is tests/integration/prefect/test_warm_start.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deployments import warm_start
from deployments.warm_zygote import (
    Zygote,
    changed,
    exit_code,
    imported_files,
    launcher_gave_up,
    stamp,
)

ENV = {"PATH": "/usr/bin", "PREFECT_API_URL": "http://server/api", "TOKEN_FROM_ENV": "x"}


def key(env: dict[str, str], preload: tuple[str, ...] = ("flows/deploy.py",)) -> str:
    return warm_start.zygote_key("/venv/bin/python", list(preload), env)


def test_one_zygote_serves_runs_that_differ_only_in_prefects_per_run_variables():
    run_a = {**ENV, "PREFECT__FLOW_RUN_ID": "a", "PREFECT__CONTROL_TOKEN": "t1"}
    run_b = {**ENV, "PREFECT__FLOW_RUN_ID": "b", "PREFECT__CONTROL_TOKEN": "t2"}

    assert key(run_a) == key(run_b) == key(ENV)
    assert warm_start.stable_environment(run_a) == ENV


def test_any_other_difference_needs_a_zygote_of_its_own():
    base = key(ENV)

    assert key({**ENV, "TOKEN_FROM_ENV": "y"}) != base  # a job variable, a worker setting
    assert key({**ENV, "PREFECT_LOGGING_LEVEL": "DEBUG"}) != base  # read at import
    assert key({k: v for k, v in ENV.items() if k != "PATH"}) != base
    assert key(ENV, ("flows/deploy.py", "flows/dora.py")) != base
    assert warm_start.zygote_key("/other/python", ["flows/deploy.py"], ENV) != base


def test_the_process_conditions_include_namespaces_and_limits():
    conditions = warm_start.process_conditions()

    assert "net" in conditions["namespaces"]  # a worker in another network namespace: its own
    assert "RLIMIT_NOFILE" in conditions["limits"]
    assert conditions["ids"][0] == os.getuid()


def test_a_message_carries_the_runs_streams():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_end, write_end = os.pipe()
    try:
        warm_start.send_message(ours, {"env": {"A": "é\udcff"}}, fds=[read_end, write_end, 2])
        message, fds = warm_start.recv_message(theirs, max_fds=3)
        assert message == {"env": {"A": "é\udcff"}}
        assert len(fds) == 3
        os.write(fds[1], b"through the passed descriptor")
        assert os.read(read_end, 100) == b"through the passed descriptor"
        for fd in fds:
            os.close(fd)
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        ours.close()
        theirs.close()


def test_exit_codes_are_the_interpreters():
    assert exit_code(None) == 0
    assert exit_code(3) == 3
    assert exit_code(256) == 0
    assert exit_code("a message") == 1


def test_a_rewritten_file_is_seen_as_changed(tmp_path: Path):
    module = tmp_path / "mod.py"
    module.write_text("VALUE = 1\n")
    files = {str(module): stamp(str(module)), str(tmp_path): stamp(str(tmp_path))}
    assert changed(files) is None

    os.utime(module, ns=(1, 1))  # same size, another time
    assert changed(files) == str(module)


def test_a_file_added_beside_an_imported_one_is_seen(tmp_path: Path):
    module = tmp_path / "mod.py"
    module.write_text("VALUE = 1\n")
    files = {str(module): stamp(str(module)), str(tmp_path): stamp(str(tmp_path))}
    os.utime(tmp_path, ns=(1, 1))  # as adding a file would

    assert changed(files) == str(tmp_path)


def test_every_imported_module_file_is_watched():
    files = imported_files()

    assert warm_start.__file__ in files
    assert os.path.dirname(warm_start.__file__) in files


def test_the_launcher_imports_only_the_standard_library():
    launcher = Path(warm_start.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('launcher', {str(launcher)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prefect', 'deployflow', 'pydantic', 'flows', 'deployments')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == "[]"


def test_a_zygote_with_a_thread_refuses_the_run_and_the_launcher_starts_it_cold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Forking a process with more than one thread could leave the child holding a lock no one
    will release: a zygote in which a thread appeared refuses, closes its socket (the next
    launcher starts a fresh zygote) and exits; the launcher is told so before any child exists."""
    monkeypatch.setenv("DEPLOYFLOW_WARM_DIR", str(tmp_path / "warm"))
    monkeypatch.setenv("DEPLOYFLOW_WARM_START_TIMEOUT", "5")

    def no_fork() -> int:
        raise AssertionError("the zygote forked with a thread running")

    monkeypatch.setattr(os, "fork", no_fork)
    launcher = warm_start.Launcher(["flows/deploy.py"], [])
    environ = dict(os.environ)
    key = warm_start.zygote_key(sys.executable, launcher.preload, environ)
    base = os.path.join(warm_start.socket_dir(environ), key)
    zygote = Zygote(base, launcher.preload)  # imported nothing that could change
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(base + ".sock")
    listener.listen(1)
    zygote.listener, zygote.socket_stamp = listener, stamp(base + ".sock")
    keeps_serving: list[bool] = []

    def serve_one() -> None:
        conn, _ = listener.accept()
        keeps_serving.append(zygote.take(conn))

    # Serving from a thread of its own: the zygote's process has two.
    zygote_thread = threading.Thread(target=serve_one, daemon=True)
    zygote_thread.start()
    try:
        with pytest.raises(warm_start.WarmUnavailable) as refused:
            launcher.hand_over()
    finally:
        zygote_thread.join(timeout=10)
        listener.close()

    assert str(refused.value) == "the zygote refused the run: threads in the zygote"
    assert launcher.conn is None  # no run's process to relay: main() starts the run cold
    assert keeps_serving == [False]  # the zygote exits
    assert not os.path.exists(base + ".sock")


def test_a_zygote_does_not_start_a_run_whose_launcher_stopped_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A launcher that got no answer in time exits without starting the run cold; a zygote that
    reads its request afterwards must not start it either (a run never executes twice)."""

    def no_fork() -> int:
        raise AssertionError("the zygote started a run no launcher waits for")

    monkeypatch.setattr(os, "fork", no_fork)
    zygote = Zygote(str(tmp_path / "key"), [])
    launcher_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    request = {"argv": [], "cwd": str(tmp_path), "env": {}, "umask": 0o022}
    warm_start.send_message(launcher_end, request, fds=[0, 1, 2])
    launcher_end.close()  # as a launcher does when its wait times out

    assert zygote.take(zygote_end) is True  # refuses this one, and keeps serving


def test_a_launcher_still_waiting_is_seen_at_once():
    launcher_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote_end.settimeout(10)  # as the zygote reads requests
    try:
        started = time.monotonic()
        assert launcher_gave_up(zygote_end) is False
        assert time.monotonic() - started < 1  # did not wait for data
        assert zygote_end.gettimeout() == 10
        launcher_end.close()
        assert launcher_gave_up(zygote_end) is True
    finally:
        launcher_end.close()
        zygote_end.close()
