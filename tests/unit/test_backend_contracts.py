"""The in-memory fakes pass the same contract tests as the real backends."""

from __future__ import annotations

import pytest

from deployflow.fakes.backends import (
    Behaviour,
    InMemoryRouter,
    InMemoryTarget,
    RecordingNotifier,
    ScriptedMetrics,
)
from deployflow.providers.base import Instance
from tests.contracts import MetricsContract, NotifierContract, RouterContract, TargetContract


class TestInMemoryTarget(TargetContract):
    @pytest.fixture
    def target(self):
        return InMemoryTarget()


class TestInMemoryRouter(RouterContract):
    @pytest.fixture
    def router(self):
        return InMemoryRouter()

    @pytest.fixture
    def instances(self):
        return Instance("v1", "127.0.0.1", 20001), Instance("v2", "127.0.0.1", 20002)


class TestScriptedMetrics(MetricsContract):
    @pytest.fixture
    def metrics(self):
        no_data = Behaviour(error_rate=None, p95_seconds=None, requests=None)
        return ScriptedMetrics(lambda version: no_data)

    @pytest.fixture
    def unreachable_metrics(self):
        metrics = ScriptedMetrics(lambda v: Behaviour())
        metrics.down = True
        return metrics


class TestRecordingNotifier(NotifierContract):
    @pytest.fixture
    def notifier(self):
        return RecordingNotifier()

    @pytest.fixture
    def failing_notifier(self):
        return RecordingNotifier(failing=True)
