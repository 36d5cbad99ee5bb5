"""Process primitives: records, liveness by /proc start ticks, atomic JSON, log tails."""

from __future__ import annotations

import ast
import json
import os
import sys

import pytest

from deployflow.processes import (
    INHERITED_ENV,
    ProcessRecord,
    free_port,
    is_running,
    stop_recorded,
    tail,
    write_json_atomic,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("data", "message"),
    [({"pid": "12"}, "'pid' must be an integer"), ({"pid": 1}, "greater than 1"),
     ({"pid": 50, "start_ticks": "x"}, "'start_ticks'")],
)  # fmt: skip
def test_process_record_rejects_malformed_records(data, message):
    with pytest.raises(ValueError, match=message):
        ProcessRecord.from_json(data)


def test_process_record_round_trips_through_json():
    record = ProcessRecord(pid=4242, start_ticks=17)
    assert ProcessRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_reused_pid_is_not_our_process():
    me = ProcessRecord.of(os.getpid())
    assert is_running(me)
    if me.start_ticks is not None:  # with /proc: a different start time means another process
        assert not is_running(ProcessRecord(pid=me.pid, start_ticks=me.start_ticks + 1))


def test_write_json_atomic_creates_parents_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "state" / "record.json"
    write_json_atomic(path, {"b": 1, "a": [2]})
    assert json.loads(path.read_text()) == {"a": [2], "b": 1}
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


def test_tail_returns_the_last_lines_and_empty_for_a_missing_file(tmp_path):
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(50)))
    assert tail(log, lines=3) == "line 47\nline 48\nline 49"
    assert tail(tmp_path / "missing.log") == ""


@pytest.mark.parametrize("content", ["{not json", '{"pid": "x"}', "[]"])
def test_stop_recorded_drops_an_unreadable_record_without_signalling(tmp_path, content):
    record_path = tmp_path / "server.json"
    record_path.write_text(content)
    stop_recorded(record_path)
    assert not record_path.exists()


def test_free_port_is_a_usable_port_number():
    assert 0 < free_port() < 65536


def test_a_process_deployflow_starts_inherits_only_the_allow_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A logs.source.command (and every other run_command without its own env) gets PATH and
    the like, never deployflow's tokens or database password: read from the child itself."""
    from deployflow.providers.logs import CommandLogSource

    secrets = {
        "DEPLOYFLOW_SLACK_TOKEN": "xoxb-secret",
        "DEPLOYFLOW_GITHUB_TOKEN": "ghp_secret",
        "DEPLOYFLOW_DATABASE_URL": "postgresql://u:db-secret@h/db",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    printing = [sys.executable, "-c", "import os; print(repr(dict(os.environ)))"]
    read = CommandLogSource(printing).read("v2", None)  # the first read learns the output's tail
    assert read.error is None
    child_env = ast.literal_eval(read.cursor.seen[-1])  # type: ignore[union-attr]
    assert not set(secrets) & set(child_env)
    assert child_env["PATH"] == os.environ["PATH"]
    assert set(child_env) <= set(INHERITED_ENV) | {"LC_CTYPE", "PWD"}
