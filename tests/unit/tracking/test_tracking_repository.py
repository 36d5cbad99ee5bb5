"""Repository round trips on SQLite: what the flow writes is what the CLI reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, StatementError

from deployflow.tracking import repository as repo
from deployflow.tracking.models import (
    CheckResult,
    CheckStatus,
    Deployment,
    DeploymentStatus,
    Incident,
    StageResult,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def _deploy(session, *, version="1.0.0", environment="production", service="payments", **kw):
    return repo.create_deployment(
        session,
        service=service,
        environment=environment,
        version=version,
        strategy="canary",
        **kw,
    )


def test_full_deploy_record_round_trips_through_a_new_session(sessions):
    with sessions.begin() as session:
        deployment = _deploy(
            session, previous_version="0.9.0", git_ref="abc123", flow_run_id="run-1", started_at=T0
        )
        deployment_id = deployment.id
        repo.add_check_result(
            session,
            deployment_id,
            step="pre_checks",
            name="unit tests",
            status="passed",
            figure="212 passed",
            duration_seconds=3.5,
            details={"argv": ["pytest", "-q"]},
        )
        repo.add_check_result(
            session,
            deployment_id,
            step="migrations",
            name="lock analysis",
            status=CheckStatus.SKIPPED,
            reason="no migrations in this release",
        )
        repo.update_deployment(session, deployment_id, status="running", current_stage=0)
        repo.add_stage_result(
            session,
            deployment_id,
            index=0,
            weight=5,
            verdict="promote",
            started_at=T0 + timedelta(minutes=1),
            finished_at=T0 + timedelta(minutes=6),
            measurements=[{"metric": "error_rate", "value": 0.001, "at": T0}],
        )
        repo.add_stage_result(
            session,
            deployment_id,
            index=1,
            weight=25,
            verdict="rollback",
            started_at=T0 + timedelta(minutes=6),
            finished_at=T0 + timedelta(minutes=11),
            measurements=[{"metric": "error_rate", "value": float("nan")}],
            reason="error_rate above 0.01",
        )
        repo.add_incident(
            session,
            deployment_id,
            stage=1,
            metric="error_rate",
            value=0.07,
            threshold=0.01,
            reason="error rate 7% over 1% for 3 consecutive measurements",
            evidence={"query": "sum(rate(http_errors[1m]))", "samples": [0.05, 0.07, float("inf")]},
        )
        repo.update_deployment(
            session, deployment_id, status=DeploymentStatus.ROLLED_BACK, canary_weight=0
        )

    with sessions() as session:
        loaded = repo.get_deployment(session, deployment_id)
        data = repo.deployment_to_dict(loaded)

    assert data["status"] == "rolled_back"
    assert data["previous_version"] == "0.9.0"
    assert data["git_ref"] == "abc123"
    assert data["started_at"] == "2026-01-10T12:00:00+00:00"
    # Moving to a terminal status stamps the finish time.
    assert loaded.finished_at is not None
    assert loaded.finished_at.tzinfo is not None
    assert [s["weight"] for s in data["stages"]] == [5, 25]
    assert data["stages"][0]["measurements"] == [
        {"metric": "error_rate", "value": 0.001, "at": "2026-01-10T12:00:00+00:00"}
    ]
    # NaN / Inf are kept as Prometheus spells them, since JSON (and PostgreSQL) has no NaN.
    assert data["stages"][1]["measurements"][0]["value"] == "NaN"
    assert data["incidents"][0]["evidence"]["samples"] == [0.05, 0.07, "+Inf"]
    assert data["incidents"][0]["threshold"] == 0.01
    assert [(c["name"], c["status"], c["reason"]) for c in data["checks"]] == [
        ("unit tests", "passed", None),
        ("lock analysis", "skipped", "no migrations in this release"),
    ]
    # The CLI prints this with json.dumps; strict JSON must accept it.
    json.loads(json.dumps(data, allow_nan=False))


def test_timestamps_come_back_as_aware_utc(sessions):
    tokyo = timezone(timedelta(hours=9))
    with sessions.begin() as session:
        deployment_id = _deploy(session, started_at=datetime(2026, 3, 1, 9, 0, tzinfo=tokyo)).id
    with sessions() as session:
        started = repo.get_deployment(session, deployment_id).started_at
    assert started == datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    assert started.utcoffset() == timedelta(0)


def test_naive_datetime_is_refused(sessions):
    with sessions() as session, pytest.raises(StatementError, match="naive datetime"):
        _deploy(session, started_at=datetime(2026, 1, 1, 12, 0))


def test_last_successful_is_the_newest_real_success_in_that_environment(sessions):
    with sessions.begin() as session:
        old = _deploy(session, version="1.0.0", git_ref="aaa", started_at=T0)
        repo.update_deployment(session, old.id, status="succeeded", finished_at=T0 + timedelta(1))
        new = _deploy(session, version="1.1.0", git_ref="bbb", started_at=T0 + timedelta(2))
        repo.update_deployment(session, new.id, status="succeeded", finished_at=T0 + timedelta(3))
        # Newer, but not what runs: a failure, a rollback, a dry run, another environment.
        for status in ("failed", "rolled_back", "running"):
            later = _deploy(session, version=f"2.0.0-{status}", started_at=T0 + timedelta(4))
            repo.update_deployment(session, later.id, status=status)
        dry = _deploy(session, version="3.0.0", dry_run=True, started_at=T0 + timedelta(5))
        repo.update_deployment(session, dry.id, status="succeeded")
        staging = _deploy(
            session, version="4.0.0", environment="staging", started_at=T0 + timedelta(6)
        )
        repo.update_deployment(session, staging.id, status="succeeded")

    with sessions() as session:
        current = repo.last_successful(session, "payments", "production")
        assert current is not None
        assert (current.deployment_id, current.version, current.git_ref) == (new.id, "1.1.0", "bbb")
        assert repo.last_successful(session, "payments", "staging").version == "4.0.0"
        assert repo.last_successful(session, "payments", "qa") is None
        assert repo.last_successful(session, "ledger", "production") is None


def test_last_successful_orders_by_finish_time_not_start_time(sessions):
    # A slow deploy that started first but finished last is the one running now.
    with sessions.begin() as session:
        # Recorded as history (two deploys of one service and environment cannot both be
        # unfinished at once: see test_only_one_unfinished_real_deploy_per_environment).
        _deploy(
            session,
            version="slow",
            started_at=T0,
            status="succeeded",
        ).finished_at = T0 + timedelta(minutes=30)
        _deploy(
            session,
            version="fast",
            started_at=T0 + timedelta(minutes=5),
            status="succeeded",
        ).finished_at = T0 + timedelta(minutes=6)
    with sessions() as session:
        assert repo.last_successful(session, "payments", "production").version == "slow"


def test_history_is_newest_first_filtered_and_limited(sessions):
    with sessions.begin() as session:
        for day, (service, environment) in enumerate(
            [("payments", "production"), ("ledger", "production"), ("payments", "staging")] * 3
        ):
            _deploy(
                session,
                service=service,
                environment=environment,
                version=f"1.{day}",
                started_at=T0 + timedelta(days=day),
                status="succeeded",
            )
    with sessions() as session:
        everything = repo.history(session)
        assert [d.version for d in everything] == [f"1.{d}" for d in range(8, -1, -1)]
        payments_prod = repo.history(session, service="payments", environment="production")
        assert [d.version for d in payments_prod] == ["1.6", "1.3", "1.0"]
        assert [d.version for d in repo.history(session, environment="staging", limit=2)] == [
            "1.8",
            "1.5",
        ]
        with pytest.raises(ValueError, match="limit: must be a positive integer"):
            repo.history(session, limit=0)


def test_update_rejects_unknown_fields_and_values_by_name(sessions):
    with sessions() as session:
        deployment_id = _deploy(session).id
        with pytest.raises(
            ValueError, match=r"cannot update version: updatable fields are .*status"
        ):
            repo.update_deployment(session, deployment_id, version="9.9.9")
        with pytest.raises(ValueError, match=r"status: 'done' is not one of pending, running"):
            repo.update_deployment(session, deployment_id, status="done")
        with pytest.raises(ValueError, match="canary_weight: must be an integer percentage"):
            repo.update_deployment(session, deployment_id, canary_weight=150)
        with pytest.raises(repo.DeploymentNotFound, match="deployment 9999 does not exist"):
            repo.update_deployment(session, 9999, status="failed")
        with pytest.raises(repo.DeploymentNotFound):
            repo.get_deployment(session, 9999)
        # Non-terminal status leaves finished_at alone.
        assert repo.update_deployment(session, deployment_id, status="running").finished_at is None


def test_skipped_check_needs_a_reason_in_code_and_in_the_schema(sessions):
    with sessions() as session:
        deployment_id = _deploy(session).id
        with pytest.raises(ValueError, match="reason: required when status is 'skipped'"):
            repo.add_check_result(
                session, deployment_id, step="pre_checks", name="lint", status="skipped"
            )
        with pytest.raises(ValueError, match="status: 'green' is not one of passed"):
            repo.add_check_result(
                session, deployment_id, step="pre_checks", name="lint", status="green"
            )
        # The database refuses it too, for writers that bypass the repository.
        session.add(
            CheckResult(
                deployment_id=deployment_id,
                step="pre_checks",
                name="lint",
                status=CheckStatus.SKIPPED,
                details={},
            )
        )
        with pytest.raises(IntegrityError, match="ck_check_results_skipped_has_reason"):
            session.flush()


def test_unstorable_json_names_the_field_and_path(sessions):
    with sessions() as session:
        deployment_id = _deploy(session).id
        with pytest.raises(ValueError, match=r"evidence\.raw: object cannot be stored as JSON"):
            repo.add_incident(
                session, deployment_id, metric="latency", reason="slow", evidence={"raw": object()}
            )


def test_deleting_a_deployment_deletes_its_records(sessions, tracking_engine):
    with sessions.begin() as session:
        deployment_id = _deploy(session).id
        repo.add_stage_result(
            session, deployment_id, index=0, weight=5, verdict="promote", started_at=T0
        )
        repo.add_incident(session, deployment_id, metric="m", reason="r")
        repo.add_check_result(session, deployment_id, step="s", name="n", status="passed")
    # A bulk SQL delete skips the ORM cascade: only the database's ON DELETE CASCADE (which
    # SQLite enforces only with foreign keys turned on) can remove the children.
    with sessions.begin() as session:
        session.execute(delete(Deployment).where(Deployment.id == deployment_id))
    with sessions() as session:
        for model in (StageResult, Incident, CheckResult):
            assert session.scalar(select(func.count()).select_from(model)) == 0


def test_only_one_unfinished_real_deploy_per_environment(sessions):
    from sqlalchemy.exc import IntegrityError

    with sessions.begin() as session:
        _deploy(session, version="2.0.0", status="running")
        _deploy(session, version="2.0.0", status="running", dry_run=True)  # dry runs are exempt
        _deploy(session, version="2.0.0", status="running", environment="staging")
    with pytest.raises(IntegrityError), sessions.begin() as session:
        _deploy(session, version="2.0.1", status="pending")


def _rollback(session, bad, to, at):
    return repo.create_deployment(
        session, service="payments", environment="production", version=bad,
        previous_version=to, strategy="rollback", started_at=at,
    )  # fmt: skip


def test_a_manual_rollback_makes_the_version_it_returned_to_the_deployed_one(sessions):
    with sessions.begin() as session:
        for i, (version, previous, ref) in enumerate([("1.0", None, "aaa"), ("1.1", "1.0", "bbb")]):
            row = _deploy(session, version=version, previous_version=previous, git_ref=ref,
                          started_at=T0 + timedelta(i))  # fmt: skip
            repo.update_deployment(
                session, row.id, status="succeeded", finished_at=T0 + timedelta(i, 60)
            )
        back = _rollback(session, "1.1", "1.0", T0 + timedelta(2))
        repo.update_deployment(
            session, back.id, status="rolled_back", finished_at=T0 + timedelta(2)
        )
    with sessions() as session:
        current = repo.last_successful(session, "payments", "production")
        assert current is not None
        assert (current.version, current.git_ref) == ("1.0", "aaa")  # its release's ref
        past = repo.past_deploys(session, "payments", "production")
        assert [(p.version, p.status, p.strategy) for p in past] == [
            ("1.1", "rolled_back", "rollback"),
            ("1.1", "succeeded", "canary"),
            ("1.0", "succeeded", "canary"),
        ]


def test_a_version_live_before_any_tracked_release_is_deployed_after_a_rollback_to_it(sessions):
    with sessions.begin() as session:
        row = _deploy(session, version="1.1", previous_version="1.0", started_at=T0)
        repo.update_deployment(session, row.id, status="succeeded", finished_at=T0)
        back = _rollback(session, "1.1", "1.0", T0 + timedelta(1))
        repo.update_deployment(
            session, back.id, status="rolled_back", finished_at=T0 + timedelta(1)
        )
    with sessions() as session:
        current = repo.last_successful(session, "payments", "production")
        assert current is not None
        assert (current.deployment_id, current.version, current.git_ref) == (back.id, "1.0", None)
