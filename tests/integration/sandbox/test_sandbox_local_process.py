"""LocalProcessTarget with real processes: start, health, state files, logs, stop."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from deployflow.providers.base import Target
from deployflow.providers.local_process import LocalProcessTarget, TargetError
from deployflow.sandbox.demo_app import FAULTS_ENV
from deployflow.sandbox.supervisor import DEMO_APP_COMMAND

pytestmark = pytest.mark.integration


def test_start_stop_and_instances_of_the_demo_app(tmp_path, process_gone):
    targets = tmp_path / "targets.json"
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path, scrape_targets_file=targets)
    assert isinstance(target, Target)

    instance = target.start("v1")
    assert httpx.get(f"{instance.base_url}/healthz").json() == {"status": "ok", "version": "v1"}
    assert target.start("v1") == instance  # already running: same process, not a second one
    assert target.instances() == [instance]
    record = json.loads((tmp_path / "instances" / "v1.json").read_text())
    assert (record["pid"], record["port"], record["version"]) == (instance.pid, instance.port, "v1")
    assert json.loads(targets.read_text()) == [
        {"targets": [instance.address], "labels": {"deployflow_version": "v1"}}
    ]
    # Another object on the same state_dir (as the deploy flow builds) sees the same instance.
    assert LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path).instances() == [instance]

    target.stop("v1")
    assert instance.pid is not None
    assert process_gone(instance.pid)
    assert target.instances() == []
    assert json.loads(targets.read_text()) == []
    assert not (tmp_path / "instances" / "v1.json").exists()
    target.stop("v1")  # stopping a version that does not run is not an error


def test_a_command_that_exits_at_once_raises_with_its_log_tail(tmp_path):
    command = ["{python}", "-c", "import sys; print('boom: cannot read config'); sys.exit(3)"]
    target = LocalProcessTarget(command, state_dir=tmp_path)
    with pytest.raises(TargetError, match=r"(?s)exited with code 3.*boom: cannot read config"):
        target.start("v1")
    assert target.instances() == []
    assert "boom" in target.logs("v1")


def test_malformed_faults_make_the_demo_app_exit_2_with_the_reason(tmp_path):
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path, env={FAULTS_ENV: "{bad"})
    with pytest.raises(
        TargetError, match=f"(?s)exited with code 2.*{FAULTS_ENV} is not valid JSON"
    ):
        target.start("v1")


def test_a_process_that_never_gets_healthy_is_stopped_after_the_timeout(tmp_path, process_gone):
    pid_file = tmp_path / "pid"
    script = (
        "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); "
        "print('stuck loading', flush=True); time.sleep(60)"
    )
    command = ["{python}", "-c", script, str(pid_file)]
    target = LocalProcessTarget(command, state_dir=tmp_path, start_timeout=1.0)
    with pytest.raises(TargetError, match=r"(?s)did not answer /healthz within 1s.*stuck loading"):
        target.start("v1")
    assert process_gone(int(pid_file.read_text()))
    assert target.instances() == []


def test_a_process_ignoring_sigterm_is_killed(tmp_path, process_gone):
    script = (
        "import signal, sys, http.server; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), "
        "http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    target = LocalProcessTarget(
        ["{python}", "-c", script, "{port}"], state_dir=tmp_path, health_path="/", stop_timeout=0.5
    )
    instance = target.start("v1")
    target.stop("v1")
    assert instance.pid is not None
    assert process_gone(instance.pid)


def test_records_of_dead_processes_are_dropped(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / "instances" / "v0.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps(
        {"pid": int(finished.stdout), "start_ticks": 1, "port": 1, "host": "127.0.0.1",
         "version": "v0"}
    ))  # fmt: skip
    torn = tmp_path / "instances" / "v9.json"
    torn.write_text('{"pid": ')
    target = LocalProcessTarget(DEMO_APP_COMMAND, state_dir=tmp_path)
    assert target.instances() == []
    assert not stale.exists()
    assert not torn.exists()


def test_a_port_taken_before_the_child_binds_is_retried_once(tmp_path):
    # First run: the port "was taken" (the race free_port cannot exclude); second run serves.
    script = (
        "import os, sys, http.server\n"
        "if not os.path.exists(sys.argv[2]):\n"
        "    open(sys.argv[2], 'w').close()\n"
        "    print('OSError: [Errno 98] Address already in use', flush=True)\n"
        "    sys.exit(1)\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
        " http.server.SimpleHTTPRequestHandler).serve_forever()\n"
    )
    command = ["{python}", "-c", script, "{port}", str(tmp_path / "tried")]
    target = LocalProcessTarget(command, state_dir=tmp_path / "state", health_path="/")
    instance = target.start("v1")
    assert target.instances() == [instance]
    target.stop("v1")


def test_a_service_never_inherits_deployflows_secrets(tmp_path, monkeypatch):
    """Only the allow-list and target.env reach a service: read its real environment."""
    monkeypatch.setenv("DEPLOYFLOW_SLACK_TOKEN", "xoxb-must-not-leak")
    monkeypatch.setenv("DEPLOYFLOW_DATABASE_URL", "postgresql+psycopg://u:pw-must-not-leak@db/x")
    target = LocalProcessTarget(
        DEMO_APP_COMMAND, state_dir=tmp_path, env={"SERVICE_SETTING": "given-by-the-spec"}
    )
    try:
        instance = target.start("v1")
        assert instance.pid is not None
        with open(f"/proc/{instance.pid}/environ", "rb") as handle:
            environ = dict(
                item.split(b"=", 1) for item in handle.read().split(b"\0") if b"=" in item
            )
    finally:
        target.stop_all()
    assert b"must-not-leak" not in b"".join(environ.values())
    assert environ[b"SERVICE_SETTING"] == b"given-by-the-spec"
    assert b"PATH" in environ
