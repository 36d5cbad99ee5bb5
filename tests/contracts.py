"""Contract tests every backend passes, the in-memory fakes and the real ones alike.

Like Prefect's block standard tests: a backend's test module subclasses the contract and provides
the fixtures it names; the next backend (nginx, Kubernetes, another notifier) reuses them as they
are. Versions named here are free to start and stop; ``instances`` are two endpoints a router may
point at.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deployflow.analysis import MetricSample
from deployflow.providers.base import (
    AlertSource,
    Dependency,
    Instance,
    LogSource,
    Metrics,
    MetricsOverTime,
    NotificationResult,
    Notifier,
    Reading,
    Router,
    Target,
    close_backend,
)


class TargetContract:
    """Fixture: ``target``."""

    def test_is_a_target(self, target: Target) -> None:
        assert isinstance(target, Target)
        assert target.describe()

    def test_start_is_idempotent_and_lists_the_version(self, target: Target) -> None:
        first = target.start("c1")
        assert first.version == "c1"
        assert target.start("c1") == first
        assert "c1" in {i.version for i in target.instances()}
        assert target.health_url(first).startswith(("http://", "https://"))

    def test_stop_removes_the_version_and_stopping_twice_is_fine(self, target: Target) -> None:
        target.start("c2")
        target.stop("c2")
        target.stop("c2")
        assert "c2" not in {i.version for i in target.instances()}

    def test_stopping_a_version_that_never_ran_is_not_an_error(self, target: Target) -> None:
        target.stop("never-started")

    def test_logs_of_an_unknown_version_are_empty_not_an_error(self, target: Target) -> None:
        assert target.logs("never-started") == ""
        assert isinstance(target.logs("never-started", lines=5), str)

    def test_closing_is_optional_and_safe_twice(self, target: Target) -> None:
        target.stop("never-started")  # something to release, for a target holding clients
        close_backend(target)
        close_backend(target)


class RouterContract:
    """Fixtures: ``router`` and ``instances`` (two endpoints)."""

    def test_is_a_router(self, router: Router) -> None:
        assert isinstance(router, Router)
        assert router.frontend_url.startswith(("http://", "https://"))
        assert router.describe()

    def test_split_is_reported_back(
        self, router: Router, instances: tuple[Instance, Instance]
    ) -> None:
        stable, canary = instances
        router.set_split(stable, canary, 25)
        state = router.state()
        assert (state.stable, state.canary, state.canary_weight) == (
            stable.address, canary.address, 25,
        )  # fmt: skip

    def test_weight_zero_takes_the_canary_out(self, router: Router, instances) -> None:
        stable, canary = instances
        router.set_split(stable, canary, 50)
        router.set_split(stable, None, 0)
        state = router.state()
        assert (state.stable, state.canary, state.canary_weight) == (stable.address, None, 0)

    def test_promote_gives_the_instance_all_the_traffic(self, router: Router, instances) -> None:
        stable, canary = instances
        router.set_split(stable, canary, 50)
        router.promote(canary)
        state = router.state()
        assert (state.stable, state.canary, state.canary_weight) == (canary.address, None, 0)

    def test_closing_is_optional_and_safe_twice(self, router: Router) -> None:
        router.state()  # something to release, for a router holding a client
        close_backend(router)
        close_backend(router)

    @pytest.mark.parametrize("weight", [-1, 101])
    def test_a_weight_outside_0_100_is_refused(self, router: Router, instances, weight) -> None:
        stable, canary = instances
        with pytest.raises(ValueError, match="canary_weight"):
            router.set_split(stable, canary, weight)

    def test_a_weight_without_a_canary_is_refused(self, router: Router, instances) -> None:
        with pytest.raises(ValueError, match="no canary"):
            router.set_split(instances[0], None, 10)


class MetricsContract:
    """Fixtures: ``metrics`` (a backend that answers) and ``unreachable_metrics``."""

    def test_is_metrics(self, metrics: Metrics) -> None:
        assert isinstance(metrics, Metrics)
        assert metrics.describe()

    def test_a_version_without_data_is_no_data_not_an_error(self, metrics: Metrics) -> None:
        sample = metrics.sample("no-such-version", 30)
        assert isinstance(sample, MetricSample)
        assert sample.error is None
        assert sample.buckets == ()  # no histogram is no data, never an empty-but-valid one
        reading = metrics.p95("no-such-version", 30)
        assert isinstance(reading, Reading)
        assert (reading.value, reading.error) == (None, None)

    def test_an_unreachable_backend_is_an_error_value_never_an_exception(
        self, unreachable_metrics: Metrics
    ) -> None:
        sample = unreachable_metrics.sample("v1", 30)
        assert sample.error
        assert (sample.error_rate, sample.p95_seconds, sample.requests) == (None, None, None)
        reading = unreachable_metrics.p95("v1", 30)
        assert reading.value is None
        assert reading.error

    def test_over_time_a_version_without_data_has_no_points(self, metrics: Metrics) -> None:
        assert isinstance(metrics, MetricsOverTime)
        end = datetime.now(UTC)
        history = metrics.history("no-such-version", end - timedelta(minutes=2), end, 5, 10)
        assert (history.error_rate, history.p95_seconds, history.error) == ((), (), None)
        assert metrics.breakdown("no-such-version", end - timedelta(minutes=2), end).rows == ()

    def test_over_time_an_unreachable_backend_is_an_error_value(
        self, unreachable_metrics: Metrics
    ) -> None:
        assert isinstance(unreachable_metrics, MetricsOverTime)
        end = datetime.now(UTC)
        history = unreachable_metrics.history("v1", end - timedelta(minutes=2), end, 5, 10)
        assert history.error
        assert history.error_rate == ()
        breakdown = unreachable_metrics.breakdown("v1", end - timedelta(minutes=2), end)
        assert breakdown.error
        assert breakdown.rows == ()


class NotifierContract:
    """Fixtures: ``notifier`` (delivers) and ``failing_notifier`` (cannot deliver)."""

    def test_is_a_notifier(self, notifier: Notifier) -> None:
        assert isinstance(notifier, Notifier)
        assert notifier.describe()

    def test_a_delivered_message_is_ok(self, notifier: Notifier) -> None:
        result = notifier.post("deploying shop v2")
        assert isinstance(result, NotificationResult)
        assert result.ok
        assert result.error is None

    def test_a_failed_delivery_is_data_never_an_exception(self, failing_notifier: Notifier) -> None:
        result = failing_notifier.post("rolling back shop v3")
        assert not result.ok
        assert result.error


class LogSourceContract:
    """Fixtures: ``log_source`` (a source) with ``write_log`` (appends a line to a version's
    logs), and ``unreadable_log_source``."""

    def test_is_a_log_source(self, log_source: LogSource) -> None:
        assert isinstance(log_source, LogSource)
        assert log_source.describe()

    def test_a_read_returns_each_new_line_once(self, log_source: LogSource, write_log) -> None:
        write_log("c1", "before the stage")
        first = log_source.read("c1", None)
        assert (first.lines, first.error) == ((), None)
        write_log("c1", "ERROR one")
        write_log("c1", "two")
        second = log_source.read("c1", first.cursor)
        assert (second.lines, second.error) == (("ERROR one", "two"), None)
        assert log_source.read("c1", second.cursor).lines == ()
        write_log("c1", "three")
        assert log_source.read("c1", second.cursor).lines == ("three",)

    def test_logs_that_cannot_be_read_are_an_error_value_never_an_exception(
        self, unreadable_log_source: LogSource
    ) -> None:
        first = unreadable_log_source.read("c1", None)
        read = unreadable_log_source.read("c1", first.cursor)
        assert read.error
        assert read.lines == ()


class AlertSourceContract:
    """Fixtures: ``alert_source`` with ``fire_alert`` (makes an alert matching the source's
    matchers fire, by name) and ``unreachable_alert_source``."""

    def test_is_an_alert_source(self, alert_source: AlertSource) -> None:
        assert isinstance(alert_source, AlertSource)
        assert alert_source.describe()

    def test_a_matching_alert_is_reported_by_name(self, alert_source: AlertSource, fire_alert):
        fire_alert("ContractCheckout")
        read = alert_source.firing()
        assert read.error is None
        assert "ContractCheckout" in read.names

    def test_an_unreachable_source_is_an_error_value_never_an_exception(
        self, unreachable_alert_source: AlertSource
    ) -> None:
        read = unreachable_alert_source.firing()
        assert read.error
        assert read.alerts == ()


class DependencyContract:
    """Fixtures: ``up_dependency`` and ``down_dependency``."""

    def test_an_up_dependency_is_ok(self, up_dependency: Dependency) -> None:
        assert isinstance(up_dependency, Dependency)
        status = up_dependency.check()
        assert status.ok, status.detail
        assert status.name == up_dependency.name

    def test_a_down_dependency_is_named_never_an_exception(self, down_dependency: Dependency):
        status = down_dependency.check()
        assert not status.ok
        assert status.name == down_dependency.name
        assert status.detail
