"""Check commands as real processes: the deadline holds whatever the command leaves behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployflow.checks.process import controlled_env, run_command


def run(script: str, tmp_path: Path, timeout: float = 10.0):
    return run_command(["sh", "-c", script], cwd=tmp_path, timeout=timeout, env=controlled_env({}))


def test_a_background_child_holding_the_output_does_not_hold_the_check(tmp_path: Path) -> None:
    outcome = run("sleep 60 & echo done", tmp_path)
    assert outcome.succeeded
    assert outcome.stdout == "done\n"
    assert not outcome.timed_out
    assert outcome.duration_seconds < 10  # it did not wait for the sleep (60 s)


def test_a_process_that_left_the_group_is_abandoned_not_waited_for(tmp_path: Path) -> None:
    marker = "47.123"  # a sleep no other test starts, to clean up after
    try:
        outcome = run(f"setsid sleep {marker} & echo done", tmp_path)
        assert outcome.succeeded
        assert outcome.stdout == "done\n"
        assert outcome.duration_seconds < 30
    finally:
        subprocess.run(["pkill", "-f", f"sleep {marker}"], check=False)


def test_the_deadline_kills_the_command_and_its_children(tmp_path: Path) -> None:
    outcome = run("sleep 60; echo never", tmp_path, timeout=1.0)
    assert outcome.timed_out
    assert not outcome.succeeded
    assert "never" not in outcome.stdout
    assert outcome.duration_seconds < 10


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_large_output_is_read_completely(tmp_path: Path, stream: str) -> None:
    redirect = "" if stream == "stdout" else " 1>&2"
    outcome = run(f"seq 1 200000{redirect}", tmp_path)
    assert outcome.succeeded
    assert getattr(outcome, stream).splitlines()[-1] == "200000"
