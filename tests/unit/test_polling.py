"""The waiting primitives: a condition polled to a deadline, a step repeated in the background."""

from __future__ import annotations

import threading
import time

import pytest

from deployflow.polling import DeadlineExceeded, Repeat, wait_for, within_deadline


def test_wait_for_returns_the_first_truthy_value_and_explains_a_timeout():
    answers = iter([None, False, "ready"])
    assert wait_for(lambda: next(answers), timeout=5, interval=0.001) == "ready"

    def broken() -> None:
        raise ConnectionRefusedError("port closed")

    with pytest.raises(DeadlineExceeded, match="server up not reached") as caught:
        wait_for(broken, timeout=0.01, interval=0.001, what="server up")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)


def test_repeat_calls_the_step_until_the_block_ends_and_not_after():
    calls: list[int] = []
    with Repeat(0.001, lambda: calls.append(1), name="test-repeat") as repeat:
        wait_for(lambda: len(calls) >= 3, timeout=5, interval=0.001, what="three steps")
        assert repeat.running
    assert not repeat.running  # joined on the way out: no step can come after the block


def test_a_step_returning_true_ends_the_repetition():
    calls: list[int] = []

    def step() -> bool:
        calls.append(1)
        return len(calls) == 2

    with Repeat(0.001, step, name="test-repeat") as repeat:
        wait_for(lambda: not repeat.running, timeout=5, interval=0.001, what="end")
    assert len(calls) == 2


def test_repeat_refuses_a_non_positive_interval():
    with pytest.raises(ValueError, match="interval must be positive"):
        Repeat(0, lambda: None, name="test-repeat")


def test_within_deadline_answers_raises_the_calls_error_and_ends_a_hung_call():
    assert within_deadline(lambda: 42, seconds=5, what="a quick call") == 42
    with pytest.raises(KeyError):
        within_deadline(lambda: {}["missing"], seconds=5, what="a failing call")

    hung = threading.Event()
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"^a hung call did not finish within 0\.1s$"):
        within_deadline(lambda: hung.wait(60), seconds=0.1, what="a hung call")
    assert time.monotonic() - started < 5
    hung.set()
