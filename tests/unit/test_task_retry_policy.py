"""Every task that talks to the network is retried with jitter and bounded in time; the steps that
must not run twice (a start, the traffic switch, a stage observation) are never retried."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import time

import pytest
from prefect import Task
from prefect.states import Failed

import tasks
import tasks.prechecks
from deployflow.checks.result import CheckStatus
from deployflow.providers.base import BackendError
from deployflow.spec import AnalysisSpec
from tasks.reconcile import DeployInProgress
from tasks.retry_policy import observation_timeout
from tasks.rollout import observe_stage_for

# Starting a version twice dispatches a second github-actions workflow run; switching or observing
# twice is a second release action, not a second look; a migration command run twice may not be
# idempotent (the team's own command), and its own deadline bounds it.
MUST_NOT_REPEAT = {
    "execute",
    "restore-live-version",  # may start the live version again: a start, like execute
    "switch-to-green",
    "observe-stage",
    "observe-green-in-isolation",
    "apply-migrations",
}
# Local work only: the spec file, git history, a pure choice, an artifact on the Prefect API.
LOCAL = {"load-spec", "assess-risk", "choose-strategy", "pre-deployment-report"}
# Submitted to run side by side, so in worker threads, where a Prefect timeout cannot interrupt
# a blocking call (and Prefect warns so at every run): they keep their own deadline.
SUBMITTED = {"pre-deployment-check", "migration-checks"}


def all_tasks() -> dict[str, Task]:
    found: dict[str, Task] = {}
    for info in pkgutil.iter_modules(tasks.__path__):
        module = importlib.import_module(f"tasks.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Task) and value.fn.__module__ == module.__name__:
                found[value.name] = value
    return found


def test_every_task_is_classified_so_a_new_one_gets_a_decision():
    names = set(all_tasks())
    assert names >= MUST_NOT_REPEAT
    assert names >= LOCAL
    network = names - MUST_NOT_REPEAT - LOCAL
    talking = {"measure-baseline", "set-traffic", "post-deploy-verification", "who-is-on-call"}
    assert talking <= network


@pytest.mark.parametrize(
    "name", sorted(set(all_tasks()) - MUST_NOT_REPEAT - LOCAL), ids=lambda n: n
)
def test_network_task_retries_with_jitter_and_a_timeout(name: str):
    task = all_tasks()[name]
    assert task.retries >= 1, name
    assert task.retry_delay_seconds, name
    assert task.retry_jitter_factor, name
    if name in SUBMITTED:
        assert task.timeout_seconds is None, name
        return
    assert task.timeout_seconds, name
    assert 0 < task.timeout_seconds <= 3600, name


def test_a_hung_check_in_a_worker_thread_ends_at_its_own_deadline(
    monkeypatch: pytest.MonkeyPatch,
):
    release = threading.Event()
    monkeypatch.setattr(tasks.prechecks, "run_check", lambda *_: release.wait(60))
    monkeypatch.setattr(tasks.prechecks, "CHECK", 0.2)
    monkeypatch.setattr(tasks.prechecks, "get_run_logger", lambda: logging.getLogger("test"))
    started = time.monotonic()
    try:
        result = tasks.prechecks.pre_deployment_check.fn("tests", None, None)  # type: ignore[arg-type]
    finally:
        release.set()

    assert time.monotonic() - started < 5
    assert result.status is CheckStatus.ERROR
    assert result.reason == "the tests check did not finish within 0.2s"


@pytest.mark.parametrize("name", sorted(MUST_NOT_REPEAT))
def test_steps_that_must_not_repeat_are_never_retried(name: str):
    assert all_tasks()[name].retries == 0


def test_stage_observation_timeout_covers_the_stage_and_its_holds():
    analysis = AnalysisSpec(interval="30s", max_stage_duration="30m")
    observing = observe_stage_for(600.0, analysis)

    assert observing.retries == 0
    assert observing.timeout_seconds == observation_timeout(1800.0, 30.0)
    assert observing.timeout_seconds > 1800.0
    # The observation and every extra measurement it may hold for fit inside the timeout.
    assert observing.timeout_seconds > 600 + 3 * 30


@pytest.mark.parametrize("name", ["reconcile-interrupted", "record-start"])
def test_a_refusal_is_an_answer_and_never_retried_but_a_glitch_is(name: str):
    task = all_tasks()[name]
    retry = task.retry_condition_fn
    assert retry is not None
    refused = Failed(data=DeployInProgress("v9 of shop to sandbox is still running"))
    glitch = Failed(data=BackendError("connection reset"))
    assert retry(task, None, refused) is False
    assert retry(task, None, glitch) is True
